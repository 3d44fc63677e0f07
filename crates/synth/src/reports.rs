//! Vietnamese radiology descriptions for the synthetic HIS, with the labels they imply.
//!
//! A description has the four sections Vietnamese radiologists write, in order chest
//! wall, pleura, lungs (parenchyma), heart, each starting with "-". Normal sections use
//! the negated phrasings of the paper's normal templates; a finding replaces its
//! region's section. The hard cases of real reports are produced at known rates: text
//! without diacritics, misspellings, abbreviations, other separators, sections out of
//! order, support devices (not a finding), and rare findings no keyword covers
//! (undecidable: they go to manual review, the truth holds the radiologist's labels).

use unicode_normalization::UnicodeNormalization;

use pipe_core::rng::Rng;

/// Region order of the labels: chest_wall, pleura, parenchyma, cardiac, abnormal.
pub const LABELS: [&str; 5] = ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"];

/// Normal descriptions: (chest wall, pleura, lungs, heart) sections.
pub const NORMAL_SECTIONS: [[&str; 4]; 12] = [
    [
        "Lồng ngực cân đối, không thấy tổn thương xương.",
        "Không thấy tràn dịch, tràn khí màng phổi.",
        "Nhu mô phổi hai bên không thấy tổn thương.",
        "Bóng tim không to.",
    ],
    [
        "Khung xương lồng ngực bình thường.",
        "Màng phổi hai bên bình thường.",
        "Hai phổi sáng đều, không thấy tổn thương.",
        "Tim không to.",
    ],
    [
        "Lồng ngực cân đối.",
        "Góc sườn hoành hai bên nhọn.",
        "Nhu mô phổi hai bên sáng đều.",
        "Bóng tim không to, cung động mạch chủ bình thường.",
    ],
    [
        "Xương lồng ngực không thấy bất thường.",
        "Không thấy tràn dịch màng phổi.",
        "Không thấy tổn thương nhu mô phổi.",
        "Bóng tim trong giới hạn bình thường.",
    ],
    [
        "Thành ngực bình thường.",
        "Màng phổi bình thường.",
        "Phổi hai bên bình thường.",
        "Tim mạch bình thường.",
    ],
    [
        "Lồng ngực cân đối, các xương sườn bình thường.",
        "Vòm hoành hai bên đều, góc sườn hoành nhọn.",
        "Rốn phổi hai bên không đậm, nhu mô phổi sáng đều.",
        "Bóng tim không to.",
    ],
    [
        "Không thấy tổn thương xương thành ngực.",
        "Không thấy tràn dịch, tràn khí khoang màng phổi.",
        "Không thấy đám mờ, nốt mờ bất thường trong nhu mô phổi.",
        "Chỉ số tim ngực trong giới hạn bình thường.",
    ],
    [
        "Lồng ngực hai bên cân xứng.",
        "Màng phổi không dày.",
        "Nhu mô phổi không thấy tổn thương khu trú.",
        "Tim không to, trung thất không rộng.",
    ],
    [
        "Khung xương bình thường.",
        "Không thấy hình ảnh tràn dịch màng phổi hai bên.",
        "Hai trường phổi sáng đều.",
        "Bóng tim bình thường.",
    ],
    [
        "Thành ngực không thấy bất thường.",
        "Khoang màng phổi hai bên bình thường.",
        "Nhu mô phổi hai bên không thấy bất thường.",
        "Bóng tim, mạch máu bình thường.",
    ],
    [
        "Cấu trúc xương lồng ngực bình thường.",
        "Không thấy dày dính màng phổi.",
        "Phổi hai bên không thấy tổn thương tiến triển.",
        "Bóng tim không to, không thấy vôi hóa quai động mạch chủ.",
    ],
    [
        "Lồng ngực cân đối.",
        "Không thấy tràn dịch màng phổi.",
        "Hai phổi sáng đều.",
        "Bóng tim không to, chỉ số tim ngực 0,45.",
    ],
];

/// Finding phrases per region (chest wall, pleura, lungs, heart) and "other".
const FINDINGS: [&[&str]; 5] = [
    &[
        "Gãy cung sau xương sườn 6 bên phải.",
        "Loãng xương lan tỏa.",
        "Hình ảnh kết xương đòn trái bằng nẹp vít.",
        "Gãy cũ cung bên xương sườn 4, 5 bên trái.",
    ],
    &[
        "Tràn dịch màng phổi bên phải mức độ ít.",
        "Tràn khí màng phổi bên trái.",
        "Dày dính màng phổi đáy phổi phải.",
        "Tràn dịch màng phổi hai bên.",
    ],
    &[
        "Đám mờ thùy dưới phổi phải.",
        "Nốt mờ đường kính 12mm thùy trên phổi trái.",
        "Tổn thương xơ hóa hai đỉnh phổi.",
        "Thâm nhiễm rải rác hai phổi.",
        "Khí phế thũng hai phổi.",
        "Dày thành phế quản hai bên.",
    ],
    &[
        "Bóng tim to, chỉ số tim ngực 0,58.",
        "Quai động mạch chủ giãn, vôi hóa.",
        "Bóng tim to.",
        "Chỉ số tim ngực 0,56.",
    ],
    &[
        "Liềm hơi dưới cơ hoành phải.",
        "Dị vật cản quang vùng cổ.",
        "Thoát vị hoành trái.",
    ],
];

/// Conclusions for normal and abnormal studies.
const NORMAL_CONCLUSION: &str = "Hiện tại chưa phát hiện bất thường trên phim X-quang ngực.";
const ABNORMAL_CONCLUSION: &str = "Hình ảnh bất thường trên phim X-quang ngực, đề nghị kết hợp lâm sàng.";

/// Rare findings that no keyword list covers: they must go to manual review.
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

const DEVICES: [&str; 2] = [
    "Có hình ảnh catheter tĩnh mạch trung tâm.",
    "Máy tạo nhịp tim vùng dưới đòn trái.",
];

/// A description and what it means.
#[derive(Debug, Clone)]
pub struct Report {
    pub description: String,
    pub conclusion: String,
    pub labels: [bool; 5],
    /// Whether templates and keywords can decide it (false: manual review).
    pub decidable: bool,
    /// Which hard case shaped the text (`plain`, `no_diacritics`, …).
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

/// Write the description of a study with `findings` (chest_wall, pleura, parenchyma,
/// cardiac, other).
pub fn describe(rng: &mut Rng, findings: [bool; 5]) -> Report {
    let template = rng.next_u64() as usize % NORMAL_SECTIONS.len();
    let mut sections: Vec<String> = NORMAL_SECTIONS[template].iter().map(|s| s.to_string()).collect();
    for region in 0..4 {
        if findings[region] {
            sections[region] = rng.pick(FINDINGS[region]).to_string();
        }
    }
    let mut labels = [
        findings[0],
        findings[1],
        findings[2],
        findings[3],
        findings.iter().any(|&f| f),
    ];
    let mut decidable = true;
    let mut style = "plain";
    if findings[4] {
        sections.push(rng.pick(FINDINGS[4]).to_string());
    }
    let roll = rng.f64();
    if roll < 0.005 {
        let (text, l) = rng.pick(&RARE);
        sections.push(text.to_string());
        for (a, b) in labels.iter_mut().zip(l) {
            *a |= *b;
        }
        decidable = false;
        style = "rare_finding";
    } else if roll < 0.025 {
        sections.push(rng.pick(&DEVICES).to_string());
        style = "support_device";
    } else if roll < 0.045 {
        sections.swap(0, 2);
        style = "sections_out_of_order";
    }
    let conclusion = if labels[4] {
        ABNORMAL_CONCLUSION
    } else {
        NORMAL_CONCLUSION
    };
    let sep = match rng.f64() {
        r if r < 0.03 => "+ ",
        r if r < 0.05 => "• ",
        _ => "- ",
    };
    let mut text = if rng.chance(0.03) {
        style = if style == "plain" { "semicolons" } else { style };
        sections.join("; ")
    } else {
        sections
            .iter()
            .map(|s| format!("{sep}{s}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if sep != "- " && style == "plain" {
        style = "other_separator";
    }
    let variant = rng.f64();
    if variant < 0.04 && (text.contains("tràn dịch màng phổi") || text.contains("tràn khí màng phổi")) {
        text = text
            .replace("tràn dịch màng phổi", "TDMP")
            .replace("Tràn dịch màng phổi", "TDMP");
        text = text
            .replace("tràn khí màng phổi", "TKMP")
            .replace("Tràn khí màng phổi", "TKMP");
        if style == "plain" {
            style = "abbreviation";
        }
    } else if variant < 0.09 {
        text = strip_diacritics(&text);
        if style == "plain" {
            style = "no_diacritics";
        }
    } else if variant < 0.12 {
        text = misspell(rng, &text);
        if style == "plain" {
            style = "misspelling";
        }
    }
    Report {
        description: text.nfc().collect(),
        conclusion: conclusion.to_string(),
        labels,
        decidable,
        style,
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

/// Common typing slips radiologists make.
fn misspell(rng: &mut Rng, s: &str) -> String {
    const SLIPS: [(&str, &str); 6] = [
        ("tràn dịch", "tràn dch"),
        ("màng phổi", "mang phổi"),
        ("xương sườn", "xương suờn"),
        ("Bóng tim", "Bóng tm"),
        ("nhu mô", "nhu mo"),
        ("đám mờ", "đám mở"),
    ];
    let start = rng.next_u64() as usize % SLIPS.len();
    for k in 0..SLIPS.len() {
        let (from, to) = SLIPS[(start + k) % SLIPS.len()];
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
