//! Vietnamese radiology descriptions for the synthetic HIS, with the labels they imply.
//!
//! Sentences come from this crate's own phrase bank (`phrases.rs`), written apart from
//! the label stage and its resource files, which this crate never reads: the labeller
//! is tested on text it was not built from. A description has one sentence
//! per region (chest wall, pleura, lungs, heart) — a finding where the study has one —
//! written in one of several styles: dash-led lines, "Header:" sections, one paragraph,
//! terse notes with abbreviations, upper case; at known rates, sections out of order, a
//! support device or a technique remark, a change since the last film, a conclusion
//! line, text without diacritics, typing slips, and rare findings whose labels only a
//! radiologist gives (manual review; the truth holds them). Labels follow the
//! conventions of `tests/fixtures/label_dev/README.md`; an uncertain finding (a
//! suspicion cue) is positive, as the label stage reads it by default.

use unicode_normalization::UnicodeNormalization;

use pipe_core::rng::Rng;

use crate::phrases::{self, Finding};

/// Region order of the labels: chest_wall, pleura, parenchyma, cardiac, abnormal.
pub const LABELS: [&str; 5] = ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"];

/// Rare findings: their labels are the radiologist's (manual review, the overrides).
const RARE: [(&str, [bool; 5]); 3] = [
    // A mediastinal opacity is cardiac (tests/fixtures/label_dev/README.md conventions).
    (
        "Hình ảnh mờ không điển hình vùng trung thất trên, cần chụp cắt lớp.",
        [false, false, false, true, true],
    ),
    (
        "Biến dạng lồng ngực kiểu ngực lõm bẩm sinh.",
        [true, false, false, false, true],
    ),
    ("Hình ảnh sau mổ cắt thùy phổi trái.", [false, false, true, false, true]),
];

/// A description and what it means.
#[derive(Debug, Clone)]
pub struct Report {
    pub description: String,
    pub conclusion: String,
    pub labels: [bool; 5],
    /// Whether the writer expects the labeller to decide it (false: a rare finding,
    /// answered by the truth's overrides).
    pub decidable: bool,
    /// Which hard case shaped the text (`plain`, `headers`, `no_diacritics`, …).
    pub style: &'static str,
}

/// Findings of a study: one flag per region plus "other".
pub fn draw_findings(rng: &mut Rng) -> [bool; 5] {
    [
        rng.chance(0.06),
        rng.chance(0.08),
        rng.chance(0.2),
        rng.chance(0.1),
        rng.chance(0.02),
    ]
}

/// Labels of a phrase (0 absent, 1 present, 2 uncertain) folded into the study's: an
/// uncertain finding counts as present.
fn merge(labels: &mut [bool; 5], f: &Finding) {
    for (l, &v) in labels.iter_mut().zip(&f.labels) {
        *l |= v != 0;
    }
}

/// Write the description of a study with `findings` (chest_wall, pleura, parenchyma,
/// cardiac, other).
pub fn describe(rng: &mut Rng, findings: [bool; 5]) -> Report {
    // regions[4] collects findings outside the four; labels[4] is "abnormal" at the end.
    let mut labels = [false; 5];
    let mut sentences: Vec<(Option<usize>, String)> = Vec::new();
    for (region, &found) in findings.iter().enumerate().take(4) {
        let text = if found {
            let f = rng.pick(phrases::FINDINGS[region]);
            merge(&mut labels, f);
            f.text
        } else {
            *rng.pick(phrases::NORMAL[region])
        };
        sentences.push((Some(region), text.to_string()));
    }
    let mut style = "plain";
    let mut decidable = true;
    if findings[4] {
        let f = rng.pick(phrases::FINDINGS[4]);
        merge(&mut labels, f);
        sentences.push((None, f.text.to_string()));
    }
    match rng.f64() {
        r if r < 0.005 => {
            let (text, l) = rng.pick(&RARE);
            sentences.push((None, text.to_string()));
            for (a, b) in labels.iter_mut().zip(l) {
                *a |= *b;
            }
            decidable = false;
            style = "rare_finding";
        }
        r if r < 0.025 => {
            sentences.push((None, rng.pick(phrases::DEVICES).to_string()));
            style = "support_device";
        }
        r if r < 0.04 => {
            sentences.insert(0, (None, rng.pick(phrases::TECHNIQUE).to_string()));
            style = "technique";
        }
        r if r < 0.07 => {
            let f = rng.pick(phrases::CHANGES);
            merge(&mut labels, f);
            sentences.push((None, f.text.to_string()));
            style = "change";
        }
        r if r < 0.11 => {
            // Sections out of order: the lungs first, or the heart first.
            let k = 2 + rng.range(0, 2) as usize;
            let s = sentences.remove(k);
            sentences.insert(0, s);
            style = "sections_out_of_order";
        }
        _ => {}
    }
    labels[4] = labels.iter().any(|&l| l);
    let conclusion = if labels[4] {
        rng.pick(phrases::ABNORMAL_CONCLUSIONS)
    } else {
        rng.pick(phrases::NORMAL_CONCLUSIONS)
    }
    .to_string();
    let layout = rng.f64();
    let mut text = if layout < 0.55 {
        let sep = match rng.f64() {
            r if r < 0.05 => "+ ",
            r if r < 0.09 => "• ",
            _ => "- ",
        };
        if sep != "- " && style == "plain" {
            style = "other_separator";
        }
        sentences
            .iter()
            .map(|(_, s)| format!("{sep}{s}"))
            .collect::<Vec<_>>()
            .join("\n")
    } else if layout < 0.75 {
        // "Header: sentence" lines; the header's sentence starts in lower case.
        if style == "plain" {
            style = "headers";
        }
        sentences
            .iter()
            .map(|(r, s)| match r {
                Some(r) => format!("{}: {}", rng.pick(phrases::HEADERS[*r]), lower_first(s)),
                None => s.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    } else if layout < 0.93 {
        if style == "plain" {
            style = "paragraph";
        }
        let joiner = if rng.chance(0.3) { "; " } else { " " };
        if joiner == "; " && style == "paragraph" {
            style = "semicolons";
        }
        sentences
            .iter()
            .map(|(_, s)| {
                if joiner == "; " {
                    s.trim_end_matches('.').to_string()
                } else {
                    s.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(joiner)
    } else {
        if style == "plain" {
            style = "terse";
        }
        let mut t = sentences
            .iter()
            .map(|(_, s)| format!("- {s}"))
            .collect::<Vec<_>>()
            .join("\n");
        for (full, short) in phrases::ABBREVIATIONS {
            t = t.replace(full, short).replace(&upper_first(full), short);
        }
        t
    };
    // A conclusion line inside the description, as many write it.
    if rng.chance(0.12) {
        text = format!("{text}\nKết luận: {conclusion}");
        if style == "plain" {
            style = "conclusion";
        }
    }
    let variant = rng.f64();
    if variant < 0.04 {
        text = text.to_uppercase();
        if style == "plain" {
            style = "uppercase";
        }
    } else if variant < 0.09 {
        text = strip_diacritics(&text);
        if style == "plain" {
            style = "no_diacritics";
        }
    } else if variant < 0.13 {
        text = misspell(rng, &text);
        if style == "plain" {
            style = "misspelling";
        }
    }
    Report {
        description: text.nfc().collect(),
        conclusion,
        labels,
        decidable,
        style,
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Vietnamese without tone marks and with đ → d, as typed on keyboards without an IME.
pub fn strip_diacritics(s: &str) -> String {
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .map(|c| match c {
            'đ' => 'd',
            'Đ' => 'D',
            c => c,
        })
        .collect()
}

/// One typing slip of the phrase bank's (`phrases::SLIPS`), the first that applies from a
/// random start.
fn misspell(rng: &mut Rng, s: &str) -> String {
    let slips = phrases::SLIPS;
    let start = rng.next_u64() as usize % slips.len();
    for k in 0..slips.len() {
        let (from, to) = slips[(start + k) % slips.len()];
        if s.contains(from) {
            return s.replacen(from, to, 1);
        }
    }
    s.to_string()
}

/// A report of another service in the same session (filtered out by parse).
pub fn other_service(rng: &mut Rng) -> (&'static str, &'static str, &'static str) {
    *rng.pick(&[
        (
            "18.0001.0001",
            "Siêu âm ổ bụng tổng quát",
            "Gan không to, nhu mô đều. Túi mật không sỏi.",
        ),
        (
            "22.0120.1369",
            "Tổng phân tích tế bào máu ngoại vi",
            "Hồng cầu 4,5 T/L; Bạch cầu 7,2 G/L.",
        ),
        (
            "18.0072.0028",
            "Chụp X-quang cột sống thắt lưng thẳng nghiêng",
            "Gai xương thân đốt sống L4, L5.",
        ),
        (
            "02.0085.0040",
            "Điện tim thường",
            "Nhịp xoang đều, tần số 78 chu kỳ/phút.",
        ),
    ])
}

/// SERVICE_IDs of chest radiography (stand-ins for the Ministry of Health codes; the
/// parse stage's allow-list in `stages/parse/` lists the same ones).
pub const CHEST_SERVICES: [(&str, &str); 3] = [
    ("18.0071.0028", "Chụp X-quang ngực thẳng"),
    ("18.0071.0029", "Chụp X-quang ngực thẳng số hóa 1 phim"),
    ("18.0086.0028", "Chụp X-quang tim phổi thẳng"),
];
