"""The label stage's rules in plain Python (the comparison `benches/dataset.py` times):
the same resource files (stages/label/lexicon.yaml, abbreviations, misspellings,
normal templates), the same normalisation (folding character for character, diacritics
that must agree), clauses, attribution of findings, and negation / suspicion /
change-over-time scopes. What a careful Python user would write: a dict of terms looked
up by word n-grams (longest first), `re` for the abbreviations, `unicodedata` for the
folding. `label(text)` returns five of "1"/"0"/"u", or None for review."""
import os
import re
import unicodedata

import yaml

REGIONS = ["chest_wall", "pleura", "parenchyma", "cardiac", "other"]
OTHER = 4
ABSENT, UNCERTAIN, PRESENT = 0, 1, 2


def fold_char(c):
    if ord(c) < 128:
        return c
    if c == "đ":
        return "d"
    if c in "–—−":
        return "-"
    if c in "≤‹«":
        return "<"
    if c in "≥›»":
        return ">"
    if c in "•·":
        return "-"
    if c == "…":
        return "."
    b = unicodedata.normalize("NFD", c)[0]
    if b.isascii() and b.isalpha():
        return b
    return "x" if c.isalpha() else " "


def fold(s):
    s = "".join(fold_char(c) for c in unicodedata.normalize("NFC", s).lower())
    return " ".join(s.split())


def marks(w):
    return sorted(c for c in unicodedata.normalize("NFD", w) if unicodedata.combining(c) or c == "đ")


def within(a, b):
    b = list(b)
    for x in a:
        if x in b:
            b.remove(x)
        else:
            return False
    return True


def agrees(written, entry):
    return len(written) == len(entry) and all(
        w == e or w.isascii() or within(marks(w), marks(e)) for w, e in zip(written, entry)
    )


def arrows(path):
    out = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            x, y = line.split("=>")
            out.append((unicodedata.normalize("NFC", x.strip()), unicodedata.normalize("NFC", y.strip())))
    return out


def replace_words(text, a, b):
    return re.sub(rf"(?<!\w){re.escape(a)}(?!\w)", lambda m: b, text)


def replace_folded(text, a, b):
    if not a.isascii():
        return replace_words(text, a, b)
    a = fold(a)
    folded = "".join(fold_char(c) for c in text)
    out, copied = [], 0
    for m in re.finditer(rf"(?<![a-z0-9]){re.escape(a)}(?![a-z0-9])", folded):
        out.append(text[copied : m.start()])
        out.append(b)
        copied = m.end()
    out.append(text[copied:])
    return "".join(out)


class Labeller:
    def __init__(self, repo, ratio=0.5):
        r = lambda p: os.path.join(repo, "stages/label", p)
        lex = yaml.safe_load(open(r("lexicon.yaml"), encoding="utf-8"))
        lists = []
        for i, name in enumerate(REGIONS[:4]):
            reg = lex["regions"][name]
            lists += [(reg["headers"], ("anatomy", i)), (reg["anatomy"], ("anatomy", i)), (reg["findings"], ("finding", i))]
            lists.append((reg.get("generic", []), ("generic", i)))
        lists += [
            (lex["other"], ("finding", OTHER)),
            (lex["other_anatomy"], ("anatomy", OTHER)),
            (lex["generic"], ("generic", None)),
            (lex["predicates"]["abnormal"], ("abnormal", None)),
            (lex["predicates"]["normal"], ("normal", None)),
        ]
        for k in ["devices", "technique", "negation", "pseudo_negation", "suspicion", "resolved", "neutral", "conclusion"]:
            lists.append((lex[k], ({"devices": "device", "pseudo_negation": "pseudo"}.get(k, k), None)))
        self.terms = {}
        for lst, kind in lists:
            for t in lst:
                written = unicodedata.normalize("NFC", str(t)).lower()
                self.terms.setdefault(fold(written), []).append((written.split(), kind))
        self.max_words = max(len(t.split()) for t in self.terms)
        self.abbrev = arrows(r("abbreviations.txt"))
        self.missp = [(a.lower(), b.lower()) for a, b in arrows(r("misspellings.txt"))]
        self.ratio = ratio
        body = "\n".join(l for l in open(r("normal_templates.txt"), encoding="utf-8") if not l.lstrip().startswith("#"))
        self.templates = []
        for block in body.split("\n\n"):
            secs = sections(self.normalize(block)[1])
            if secs:
                self.templates.append(sorted(secs))
        self.normal_sections = {s for t in self.templates for s in t}

    def normalize(self, text):
        text = unicodedata.normalize("NFC", text)
        for a, b in self.abbrev:
            text = replace_words(text, a, b)
        text = text.lower()
        for a, b in self.missp:
            text = replace_folded(text, a, b)
        chars = []
        for line in text.splitlines():
            line = line.lstrip().lstrip("-–—+•*·")
            m = re.match(r"\d+[.)]", line)
            if m:
                line = line[m.end() :]
            for i, c in enumerate(line):
                minus = lambda j: 0 <= j < len(line) and line[j] == "-"
                if c in "/\\–—" or (c == "-" and not (0 < i < len(line) - 1 and line[i - 1] == "(" and line[i + 1] == ")")):
                    c = " "
                elif c == "(" and not (minus(i + 1) and i + 2 < len(line) and line[i + 2] == ")"):
                    c = " "
                elif c == ")" and not (i > 0 and minus(i - 1)):
                    c = " "
                elif c.isspace():
                    c = " "
                if c == " " and (not chars or chars[-1] in " \n"):
                    continue
                chars.append(c)
            while chars and chars[-1] == " ":
                chars.pop()
            chars.append("\n")
        orig = "".join(chars)
        return orig, "".join(fold_char(c) for c in orig)

    def find(self, orig, folded):
        tokens = [(m.start(), m.end()) for m in re.finditer(r"[a-z0-9]+|\(-\)|\?", folded)]
        out, i = [], 0
        while i < len(tokens):
            hit = None
            for n in range(min(self.max_words, len(tokens) - i), 0, -1):
                s, e = tokens[i][0], tokens[i + n - 1][1]
                key = folded[s:e]
                if key not in self.terms:
                    continue
                written = orig[s:e].split()
                for words, kind in self.terms[key]:
                    if agrees(written, words):
                        hit = (s, e, kind, key, n)
                        break
                if hit:
                    break
            if hit:
                out.append(hit[:4])
                i += hit[4]
            else:
                i += 1
        return out

    def label(self, text):
        orig, folded = self.normalize(text)
        secs = sections(folded)
        if not secs:
            return None
        if sorted(secs) in self.templates:
            return ["0"] * 5
        found = self.find(orig, folded)
        regions = [ABSENT] * 5
        seen = [False] * 5
        section = None
        section_line = None
        conclusion = False
        for start, end in self.clauses(folded, found):
            fin = [f for f in found if f[0] >= start and f[1] <= end]
            body = folded[start:end]
            lead = start + len(body) - len(body.lstrip())
            opened = None
            line = folded[:start].count("\n")
            if section_line is not None and section_line[0] != line and not section_line[1]:
                section = None
                section_line = None
            if fin and fin[0][0] == lead and folded[fin[0][1] : end].lstrip().startswith(":"):
                alone = folded[fin[0][1] : end].lstrip().lstrip(":").strip() == ""
                if fin[0][2][0] == "anatomy":
                    section = opened = fin[0][2][1]
                    section_line = (line, alone)
                    conclusion = False
                elif fin[0][2][0] == "conclusion":
                    section = None
                    conclusion = True
            clause = body.strip()
            if not clause or clause.rstrip(".,:") in self.normal_sections:
                continue
            if not self.read_clause(folded, start, end, fin, section, opened, conclusion, regions, seen):
                return None
        out = ["1" if s == PRESENT else "u" if s == UNCERTAIN else "0" for s in regions[:4]]
        top = max(regions[r] for r in range(5) if seen[r]) if any(seen) else ABSENT
        out.append("1" if top == PRESENT else "u" if top == UNCERTAIN else "0")
        return out

    def clauses(self, f, found):
        starts = {s for s, e, k, t in found if k[0] in ("anatomy", "conclusion") and f[e:].lstrip(" ").startswith(":")}
        out, start = [], 0
        for i, c in enumerate(f):
            if c in "\n;!" or (c == "." and not (i > 0 and f[i - 1].isdigit() and i + 1 < len(f) and f[i + 1].isdigit())):
                if i > start:
                    out.append((start, i))
                start = i + 1
            elif i > start and f[i - 1] == " " and i in starts:
                out.append((start, i))
                start = i
        if len(f) > start:
            out.append((start, len(f)))
        return out

    def read_clause(self, f, start, end, found, section, opened, conclusion, regions, seen):
        sub_of = lambda pos: f[start:pos].count(",")
        understood = unplaced = False
        for k, (s, e, kind, term) in enumerate(found):
            if kind[0] not in ("finding", "generic", "abnormal"):
                continue
            if kind[0] == "finding":
                region = kind[1]
            elif kind[0] == "generic":
                region = opened if opened is not None else self.region_of(f, found, k, sub_of, section)
                if region is None:
                    region = kind[1]
            else:
                region = self.region_of(f, found, k, sub_of, section)
            if region is None and conclusion:
                region = OTHER
            state = self.state(f, found, k, sub_of)
            if region is None:
                if state != ABSENT:
                    unplaced = True
                else:
                    understood = True
                continue
            seen[region] = True
            regions[region] = max(regions[region], state)
            understood = True
        r = ctr(f[start:end], self.ratio)
        if r is not None:
            seen[3] = True
            regions[3] = max(regions[3], PRESENT if r else ABSENT)
            understood = True
        if unplaced:
            return False
        if understood:
            return True
        kinds = [k[0] for _, _, k, _ in found]
        normal = "normal" in kinds
        anatomy = "anatomy" in kinds or section is not None
        unknown = 0
        for m in re.finditer(r"[a-z0-9]+", f[start:end]):
            w0, w1 = start + m.start(), start + m.end()
            if not any(s <= w0 and w1 <= e for s, e, _, _ in found) and not any(c.isdigit() for c in m.group()):
                unknown += 1
        technique = "technique" in kinds and "anatomy" not in kinds
        return "device" in kinds or (((normal and anatomy) or technique) and unknown <= 3) or unknown == 0

    def region_of(self, f, found, k, sub_of, section):
        def subject(x):
            if x[2][0] == "anatomy" and landmark(f, x[0]):
                return None
            return x[2][1] if x[2][0] in ("anatomy", "finding") else None

        sub = sub_of(found[k][0])
        before = [x for x in found[:k] if sub_of(x[0]) == sub][::-1]
        after = [x for x in found[k + 1 :] if sub_of(x[0]) == sub]
        for x in before + after + found[:k][::-1] + found[k + 1 :]:
            if subject(x) is not None:
                return subject(x)
        return section

    def state(self, f, found, k, sub_of):
        s0, e0, _, _ = found[k]
        sub = sub_of(s0)

        def scoped_before(kind):
            idx = [i for i in range(k) if found[i][2][0] == kind]
            if not idx:
                return False
            c = idx[-1]
            between = f" {f[found[c][1]:s0]} "
            if any(b in between for b in [" nhung ", " tuy nhien ", " song ", " ngoai ra ", " con ", ", co "]):
                return False
            run = 0
            while c + 1 + run < len(found):
                x = found[c + 1 + run]
                gap = f[found[c + run][1] : x[0]].strip()
                if x[2][0] != "abnormal" or gap not in ("", "hay", "va"):
                    break
                run += 1
            if found[c][3] in ("khong", "chua") and run > 0 and k > c + run:
                return False
            for x in found[c + 1 : k]:
                if x[2][0] == "anatomy" and f[: x[0]].rstrip().endswith(","):
                    return False
                if kind == "negation" and x[2][0] == "suspicion":
                    return False
            return True

        def after_in_sub(kind):
            return any(x[2][0] == kind and sub_of(x[0]) == sub for x in found[k + 1 :])

        nxt = found[k + 1] if k + 1 < len(found) else None
        negated_after = (
            nxt is not None and nxt[2][0] == "negation" and all(c in " :=(" for c in f[e0 : nxt[0]])
        ) or f[e0:].lstrip().startswith("(-)")
        negation = scoped_before("negation") or negated_after or self.negating_normal_before(f, found, k)
        if negation or scoped_before("resolved") or after_in_sub("resolved"):
            return ABSENT
        if scoped_before("suspicion") or after_in_sub("suspicion"):
            return UNCERTAIN
        return PRESENT

    def negating_normal_before(self, f, found, k):
        idx = [i for i in range(k) if found[i][2][0] == "normal"]
        if not idx:
            return False
        c = idx[-1]
        prefixes = ["khong thay ", "chua thay ", "khong co ", "chua co ", "khong phat hien ", "chua phat hien ", "khong ghi nhan ", "chua ghi nhan ", "khong ton thuong"]
        if not any(found[c][3].startswith(p) for p in prefixes):
            return False
        if any(x[2][0] not in ("finding", "generic", "abnormal", "neutral", "pseudo") for x in found[c + 1 : k]):
            return False
        return " co " not in f[found[c][1] : found[k][0]]


def landmark(f, at):
    before = f[:at]
    cut = max(before.rfind(c) for c in ",.;:\n") + 1
    words = before[cut:].split()[::-1][:4]
    return any(w in ("ngang", "ung", "chieu", "chong", "den", "toi") for w in words)


def sections(folded):
    out = []
    for line in folded.splitlines():
        for c in line.split(";"):
            c = c.strip().lstrip("-–+•*").strip().rstrip(".,:").strip()
            if c:
                out.append(c)
    return out


CTR_NAMES = ["chi so tim long nguc", "chi so tim nguc", "ti le tim long nguc", "ty le tim long nguc", "ti le tim nguc", "ty le tim nguc", "chi so tim", "ctr"]


def ctr(f, limit):
    at = None
    for n in CTR_NAMES:
        for m in re.finditer(re.escape(n), f):
            if m.start() == 0 or not f[m.start() - 1].isalnum():
                at = m.end()
                break
        if at is not None:
            break
    if at is None:
        return None
    rest = f[at:]
    m = re.search(r"\d", rest)
    if not m:
        return None
    lead = rest[: m.start()]
    if len(lead.split()) > 5:
        return None
    num = re.match(r"[\d.,]+", rest[m.start() :]).group().rstrip(".,")
    try:
        v = float(num.replace(",", "."))
    except ValueError:
        return None
    if rest[m.start() + len(num) :].lstrip().startswith("%") or v > 1:
        v /= 100
    if "<" in lead or "nho hon" in lead or "duoi" in lead:
        return False
    if ">" in lead or "lon hon" in lead or "tren" in lead:
        return v >= limit
    return v > limit
