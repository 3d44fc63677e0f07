//! Phrase bank of the synthetic hospital's Vietnamese chest X-ray report writer.
//!
//! Every sentence here is one line of the "Mô tả" (description) part of a chest X-ray
//! (PA/AP) report, written with full diacritics, together with what it means for the four
//! regions of Vietnamese chest X-ray reporting (chest wall, pleura, parenchyma, cardiac)
//! and for "other" findings outside them. The writer derives the other styles from these
//! sentences in code: no diacritics, the terse abbreviated style ([`ABBREVIATIONS`]),
//! typing slips ([`SLIPS`]), upper case, other separators and section orders.
//!
//! # Written apart from the labeller
//!
//! The report labeller must be measured on text it was not built from, so this bank was
//! written without opening the label stage, its resources or its code, or the
//! hand-labelled development descriptions (`tests/fixtures/label_dev/*.csv`). The labels
//! follow the conventions of `tests/fixtures/label_dev/README.md`, in particular:
//!
//! - 0 absent or normal, 1 present, 2 uncertain. A finding is 2 only when the finding
//!   itself is hedged ("nghi", "nghi ngờ", "theo dõi", "TD", "không loại trừ", "có thể",
//!   "gợi ý", or a trailing "?"); a definite sign with a hedged diagnosis is 1
//!   ("đám mờ …, theo dõi lao").
//! - Negations and negated adjectives ("không to", "không giãn", "không dày", "không tù")
//!   give 0; "không đều", "không rõ", "không thuần nhất" describe a present finding.
//! - A pushed or pulled mediastinum or trachea is cardiac 1; a lung collapsed by an
//!   effusion or a pneumothorax is parenchyma 1; hyperinflation signs (wide horizontal
//!   intercostal spaces, low flat diaphragm, "tim hình giọt nước") are parenchyma only.
//! - A cardiothoracic ratio above 0.5 (0,55 / 0.55 / 55% / "> 0,5") is cardiac 1, below
//!   is normal. Aortic arch dilated, unfolded or calcified is cardiac 1.
//! - Bones named only as landmarks are chest wall 0; bone hardware (nẹp vít, kết hợp
//!   xương) is chest wall 1; support devices and technique remarks are not abnormal.
//! - Free air, foreign bodies in the gut, hernias and dextrocardia are "other" only.
//! - A finding reported as gone is 0; smaller but still there is 1.
//!
//! # Sources of wording
//!
//! Vocabulary (terms, predicates, cue words, abbreviations, section headers, ratio
//! notations) comes from public Vietnamese radiology material gathered in a research
//! note: teaching pages (capnhatkienthuc.com "Các dấu hiệu và hội chứng X quang phổi",
//! cdha.info "X quang hội chứng màng phổi" and rib fractures, ylamsang.net, yhn.edu.vn,
//! phcn-online.com on pneumonia and effusion, ykhoa.org and medlatec.vn on the
//! cardiothoracic ratio, 123docz/tailieu.vn notes on tuberculosis and chest trauma),
//! public HIS/RIS report templates and public code handling Vietnamese radiology text
//! (normal templates, "chỉ số tim/ngực < 50%", "Quai ĐMC vồng", "dầy dính MP",
//! technique remarks such as "Chụp tại giường", "Hít vào không đủ sâu"), and the
//! four-region split of the PLOS ONE 2022 paper on Vietnamese chest X-ray reports. No
//! source sentence was copied: the sentences below combine that vocabulary anew.

/// A finding sentence and what it means, per region: chest_wall, pleura, parenchyma,
/// cardiac, other (outside the four). 0 absent, 1 present, 2 uncertain (a suspicion cue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub text: &'static str,
    pub labels: [u8; 5],
}

/// Shorthand for the tables below.
const fn finding(text: &'static str, labels: [u8; 5]) -> Finding {
    Finding { text, labels }
}

/// Normal sentences per region (chest_wall, pleura, parenchyma, cardiac): at least 25 each,
/// all different wordings (anatomy + normal predicate; negated findings; "trong giới hạn
/// bình thường"; cardiothoracic ratio below 0.5 written several ways for cardiac).
pub const NORMAL: [&[&str]; 4] = [
    // chest_wall
    &[
        "Khung xương lồng ngực cân đối, chưa thấy đường gãy.",
        "Các xương sườn hai bên liên tục, không thấy gãy.",
        "Xương đòn hai bên cân xứng, không thấy tổn thương.",
        "Cột sống ngực thẳng trục, không gù vẹo.",
        "Phần mềm thành ngực hai bên không dày, không thấy tràn khí dưới da.",
        "Không thấy hình ảnh tiêu xương hay khuyết xương ở khung sườn.",
        "Các thân đốt sống ngực có chiều cao bình thường.",
        "Xương bả vai và xương đòn hai bên chưa phát hiện bất thường.",
        "Khung xương lồng ngực trong giới hạn bình thường.",
        "Không ghi nhận gãy xương sườn, xương đòn hay xương ức.",
        "Thành ngực hai bên cân đối, mô mềm bình thường.",
        "Các cung sườn đều đặn, vỏ xương liên tục.",
        "Không thấy khối hay sưng nề phần mềm thành ngực.",
        "Xương ức và các sụn sườn không thấy bất thường trên phim thẳng.",
        "Cột sống ngực không thấy xẹp hay vỡ lún thân đốt.",
        "Không có dấu hiệu loãng xương.",
        "Khung sườn hai bên nguyên vẹn.",
        "Mật độ xương bình thường, không thấy ổ hủy xương.",
        "Chưa thấy gãy hay tiêu xương ở khung xương lồng ngực.",
        "Xương vai hai bên không thấy gãy, khớp vai cân đối.",
        "Các khoang liên sườn hai bên đều nhau.",
        "Không phát hiện tràn khí dưới da thành ngực hai bên.",
        "Khung xương ngực không có hình ảnh chấn thương.",
        "Phần mềm thành ngực và vùng nách hai bên bình thường.",
        "Không thấy biến dạng lồng ngực.",
        "Bờ các xương sườn đều, không thấy can xương.",
        "Các đốt sống ngực thẳng hàng, không thấy gai xương.",
        "Không thấy dụng cụ kết hợp xương.",
        "Chưa ghi nhận tổn thương xương sườn hai bên.",
    ],
    // pleura
    &[
        "Hai góc sườn hoành sáng, nhọn đều.",
        "Vòm hoành hai bên đều, bờ rõ nét.",
        "Chưa phát hiện tràn dịch màng phổi phải hay trái.",
        "Không có hình ảnh tràn khí màng phổi.",
        "Màng phổi thành hai bên mỏng, không dày.",
        "Góc sườn hoành phải và trái đều nhọn.",
        "Chưa thấy dịch trong khoang màng phổi.",
        "Không ghi nhận dày dính hay vôi hóa màng phổi.",
        "Vòm hoành hai bên vị trí bình thường, đường bờ liên tục.",
        "Góc tâm hoành hai bên rõ.",
        "Hai bên không có tràn dịch hay tràn khí màng phổi.",
        "Màng phổi trong giới hạn bình thường.",
        "Các góc sườn hoành không tù.",
        "Không thấy mức khí dịch trong khoang màng phổi.",
        "Rãnh liên thùy không dày, không có dịch.",
        "Hai vòm hoành mềm mại, cong đều.",
        "Góc sườn hoành hai bên tự do, không có dịch.",
        "Chưa ghi nhận tràn khí màng phổi hai bên.",
        "Không thấy đường màng phổi tạng tách khỏi thành ngực.",
        "Khoang màng phổi không thấy dịch hay khí bất thường.",
        "Góc sườn hoành trái sáng, không kém nhọn.",
        "Không có dấu hiệu tràn dịch tự do hay khu trú ở màng phổi.",
        "Vòm hoành hai bên không nâng cao.",
        "Cơ hoành hai bên bình thường.",
        "Góc sườn hoành hai bên trong giới hạn bình thường.",
        "Không có hình ảnh xóa bờ vòm hoành.",
        "Màng phổi hai bên chưa phát hiện tổn thương.",
    ],
    // parenchyma
    &[
        "Hai phế trường sáng, vân phổi phân bố bình thường.",
        "Nhu mô phổi hai bên không thấy đám mờ hay nốt mờ.",
        "Rốn phổi hai bên không đậm, không rộng.",
        "Phổi hai bên thông khí tốt.",
        "Không thấy tổn thương thâm nhiễm hay đông đặc.",
        "Vân phổi không tăng đậm.",
        "Trường phổi hai bên sáng đều từ đỉnh đến đáy.",
        "Không thấy khối hay nốt bất thường ở hai phổi.",
        "Nhu mô phổi trong giới hạn bình thường.",
        "Không có hình ảnh ứ huyết hay phù phổi.",
        "Các nhánh phế huyết quản phân bố đều, không tăng đậm.",
        "Không thấy hình hang hay xơ hóa ở hai đỉnh phổi.",
        "Thành phế quản không dày.",
        "Chưa phát hiện hình mờ bất thường ở nhu mô hai phổi.",
        "Rốn phổi hai bên cân đối, kích thước bình thường.",
        "Không thấy dấu hiệu xẹp phổi.",
        "Phế trường hai bên không có hình ảnh kính mờ.",
        "Không có đường Kerley.",
        "Hai phổi không thấy hình ảnh lao tiến triển hay di chứng lao.",
        "Vùng hạ đòn hai bên sáng, không thấy nốt mờ.",
        "Hai đáy phổi sáng, không thấy dải mờ.",
        "Mạch máu phổi không giãn.",
        "Không ghi nhận kén khí hay khí phế thũng.",
        "Phổi trái và phổi phải thông khí đều nhau.",
        "Không thấy vôi hóa trong nhu mô phổi.",
        "Phế quản gốc hai bên thông thoáng.",
        "Nhu mô phổi sáng, không có bóng mờ bất thường.",
        "Tuần hoàn phổi bình thường.",
    ],
    // cardiac
    &[
        "Bóng tim kích thước bình thường, chỉ số tim ngực khoảng 0,45.",
        "Bóng tim bình thường, chỉ số tim/ngực < 50%.",
        "Tim không to, CTR 0.44.",
        "Tỷ lệ tim/ngực 0,47, bóng tim trong giới hạn bình thường.",
        "Chỉ số tim lồng ngực dưới 0,5.",
        "Bóng tim không lớn, CTR < 0.5.",
        "Chỉ số tim ngực 42%.",
        "Trung thất không giãn, khí quản nằm giữa.",
        "Quai động mạch chủ không vồng.",
        "Trung thất cân đối, không lệch.",
        "Các cung tim rõ, kích thước trong giới hạn bình thường.",
        "Bóng tim nằm giữa, bờ tim rõ nét.",
        "Không thấy khối bất thường ở trung thất.",
        "Quai động mạch chủ không giãn, thành không có vôi hóa.",
        "Bóng tim và trung thất trong giới hạn bình thường.",
        "Chỉ số tim - ngực = 0,46.",
        "Tim hình dáng và kích thước bình thường.",
        "Trung thất trên không rộng.",
        "Cung động mạch chủ kích thước bình thường.",
        "Chỉ số tim ngực nhỏ hơn 0,5, bóng tim không to.",
        "Bóng tim không to (CTR ~ 0,43).",
        "Tỉ lệ tim ngực 0.48.",
        "Không thấy tràn khí trung thất.",
        "Không có dấu hiệu tràn dịch màng ngoài tim.",
        "Khí quản thẳng, không bị đẩy lệch.",
        "Chỉ số tim/lồng ngực 45%.",
        "Tim không to, các cung tim bình thường.",
        "Bờ tim hai bên đều, không thấy cung tim phồng.",
    ],
];

/// Finding sentences per region (the region's own findings first; a sentence may also set
/// other regions, e.g. an effusion pushing the mediastinum): at least 25 each for the four
/// regions and 12 for `other` (index 4). Include in each region: several severities and
/// sides, 4+ uncertain ones (theo dõi / TD / nghi / nghi ngờ / không loại trừ / gợi ý /
/// có thể / "?"), cardiothoracic ratios above 0.5 for cardiac (comma and dot decimals, %).
pub const FINDINGS: [&[Finding]; 5] = [
    // chest_wall
    &[
        finding("Gãy cung bên xương sườn 5, 6 bên trái, di lệch nhẹ.", [1, 0, 0, 0, 0]),
        finding("Gãy cung trước xương sườn 3 bên phải, không di lệch.", [1, 0, 0, 0, 0]),
        finding(
            "Gãy 1/3 giữa xương đòn phải, hai đầu gãy chồng lên nhau.",
            [1, 0, 0, 0, 0],
        ),
        finding(
            "Gãy nhiều xương sườn bên phải (4 đến 8), kèm tràn khí dưới da thành ngực phải.",
            [1, 0, 0, 0, 0],
        ),
        finding(
            "Tràn khí dưới da lan rộng vùng cổ và thành ngực hai bên.",
            [1, 0, 0, 0, 0],
        ),
        finding(
            "Can xương cung sau xương sườn 7, 8 bên trái do gãy cũ.",
            [1, 0, 0, 0, 0],
        ),
        finding("Xẹp hình chêm thân đốt sống D8.", [1, 0, 0, 0, 0]),
        finding(
            "Vỡ lún thân đốt sống ngực D12, giảm chiều cao thân đốt khoảng 30%.",
            [1, 0, 0, 0, 0],
        ),
        finding("Cột sống ngực vẹo sang trái, đỉnh ở D7.", [1, 0, 0, 0, 0]),
        finding(
            "Gai xương bờ trước các thân đốt sống ngực, thoái hóa cột sống.",
            [1, 0, 0, 0, 0],
        ),
        finding("Loãng xương, vỏ xương mỏng, bè xương thưa.", [1, 0, 0, 0, 0]),
        finding(
            "Ổ tiêu xương bờ không đều cung sau xương sườn 6 bên phải, theo dõi di căn.",
            [1, 0, 0, 0, 0],
        ),
        finding("Khuyết xương đầu ngoài xương đòn trái.", [1, 0, 0, 0, 0]),
        finding(
            "Xương đòn phải đã được kết hợp xương bằng nẹp và 6 vít.",
            [1, 0, 0, 0, 0],
        ),
        finding("Nẹp vít cố định cột sống ngực đoạn D10-D12.", [1, 0, 0, 0, 0]),
        finding(
            "Khối mờ phần mềm thành ngực bên phải, bờ rõ, tạo góc tù với thành ngực.",
            [1, 0, 0, 0, 0],
        ),
        finding("Sưng nề phần mềm thành ngực phải sau chấn thương.", [1, 0, 0, 0, 0]),
        finding(
            "Mảng sườn bên trái do gãy hai ổ các xương sườn 5, 6, 7.",
            [1, 0, 0, 0, 0],
        ),
        finding("Gãy xương ức đoạn thân, di lệch ít.", [1, 0, 0, 0, 0]),
        finding("Gãy cổ xương bả vai trái.", [1, 0, 0, 0, 0]),
        finding("Gù cột sống ngực, nhiều thân đốt sống hình chêm.", [1, 0, 0, 0, 0]),
        finding(
            "Gãy rạn cung trước xương sườn 2 trái kèm tràn máu - tràn khí màng phổi trái.",
            [1, 1, 0, 0, 0],
        ),
        finding(
            "Gãy cung bên xương sườn 9, 10 bên phải, góc sườn hoành phải tù.",
            [1, 1, 0, 0, 0],
        ),
        finding(
            "Gãy cung sau xương sườn 4, 5 bên trái kèm đụng dập nhu mô phổi trái.",
            [1, 0, 1, 0, 0],
        ),
        finding(
            "Cấu trúc xương lồng ngực thưa, giảm khoáng hóa lan tỏa.",
            [1, 0, 0, 0, 0],
        ),
        finding("Đặc xương rải rác các xương sườn và thân đốt sống.", [1, 0, 0, 0, 0]),
        finding("Nghi gãy rạn cung bên xương sườn 8 trái.", [2, 0, 0, 0, 0]),
        finding("Không loại trừ gãy cũ cung sau xương sườn 10 phải.", [2, 0, 0, 0, 0]),
        finding("Có thể xẹp nhẹ thân đốt sống D11.", [2, 0, 0, 0, 0]),
        finding("TD gãy đầu ngoài xương đòn trái.", [2, 0, 0, 0, 0]),
        finding("Hình ảnh gợi ý tràn khí dưới da vùng nách phải.", [2, 0, 0, 0, 0]),
        finding(
            "Gãy cung trước xương sườn 6 phải?, đề nghị chụp chếch.",
            [2, 0, 0, 0, 0],
        ),
        finding("Nghi ngờ tổn thương tiêu xương thân đốt sống D9.", [2, 0, 0, 0, 0]),
    ],
    // pleura
    &[
        finding(
            "Tràn dịch màng phổi phải lượng ít, tù góc sườn hoành phải.",
            [0, 1, 0, 0, 0],
        ),
        finding(
            "Tràn dịch màng phổi trái lượng vừa, có đường cong Damoiseau.",
            [0, 1, 0, 0, 0],
        ),
        finding(
            "Tràn dịch màng phổi phải lượng nhiều, đẩy trung thất sang trái.",
            [0, 1, 0, 1, 0],
        ),
        finding(
            "Tràn dịch màng phổi trái lượng vừa, xóa bờ vòm hoành trái.",
            [0, 1, 0, 0, 0],
        ),
        finding(
            "Tràn dịch màng phổi hai bên lượng ít, bên trái nhiều hơn.",
            [0, 1, 0, 0, 0],
        ),
        finding("Tràn khí màng phổi phải lượng ít vùng đỉnh.", [0, 1, 0, 0, 0]),
        finding(
            "Tràn khí màng phổi trái lượng nhiều, phổi trái xẹp co về rốn, trung thất bị đẩy sang phải.",
            [0, 1, 1, 1, 0],
        ),
        finding(
            "Tràn khí màng phổi phải, thấy đường màng phổi tạng cách thành ngực 2 cm.",
            [0, 1, 0, 0, 0],
        ),
        finding(
            "Tràn dịch - tràn khí màng phổi trái, mức khí dịch ngang cung sau xương sườn 8.",
            [0, 1, 0, 0, 0],
        ),
        finding("Tràn máu - tràn khí màng phổi phải sau chấn thương.", [0, 1, 0, 0, 0]),
        finding(
            "Màng phổi thành bên phải dày, dính vào góc sườn hoành.",
            [0, 1, 0, 0, 0],
        ),
        finding("Dày dính màng phổi đáy trái, góc sườn hoành trái tù.", [0, 1, 0, 0, 0]),
        finding("Vôi hóa màng phổi dạng mảng hai bên.", [0, 1, 0, 0, 0]),
        finding("Góc sườn hoành phải và trái đều kém nhọn.", [0, 1, 0, 0, 0]),
        finding("Góc sườn hoành trái mờ, bờ vòm hoành trái không rõ.", [0, 1, 0, 0, 0]),
        finding("Vòm hoành phải nâng cao, góc sườn hoành phải tù.", [0, 1, 0, 0, 0]),
        finding("Vòm hoành trái nâng cao bất thường.", [0, 1, 0, 0, 0]),
        finding("Tràn dịch rãnh liên thùy bé phổi phải, hình thoi.", [0, 1, 0, 0, 0]),
        finding(
            "Tràn dịch màng phổi khu trú thành bên trái, có vách hóa.",
            [0, 1, 0, 0, 0],
        ),
        finding(
            "Tràn dịch màng phổi phải lượng nhiều, phổi phải xẹp thụ động.",
            [0, 1, 1, 0, 0],
        ),
        finding(
            "Ống dẫn lưu màng phổi phải, còn tràn khí màng phổi lượng ít vùng đỉnh.",
            [0, 1, 0, 0, 0],
        ),
        finding(
            "Dày màng phổi đỉnh hai bên kèm xơ đỉnh phổi, di chứng lao.",
            [0, 1, 1, 0, 0],
        ),
        finding(
            "Tràn khí màng phổi áp lực bên trái, trung thất lệch sang phải, vòm hoành trái bị đẩy xuống thấp.",
            [0, 1, 0, 1, 0],
        ),
        finding(
            "Góc sườn hoành trái tù, theo dõi tràn dịch màng phổi lượng ít.",
            [0, 1, 0, 0, 0],
        ),
        finding(
            "Tràn dịch màng phổi hai bên lượng vừa, bóng tim to, chỉ số tim ngực 0,6.",
            [0, 1, 0, 1, 0],
        ),
        finding(
            "Tràn dịch màng phổi phải lượng ít, không loại trừ dày dính màng phổi.",
            [0, 1, 0, 0, 0],
        ),
        finding("Có thể tràn dịch màng phổi trái lượng rất ít.", [0, 2, 0, 0, 0]),
        finding("Góc sườn hoành phải tù?, đề nghị chụp phim nghiêng.", [0, 2, 0, 0, 0]),
        finding("Nghi tràn khí màng phổi đỉnh phổi phải lượng ít.", [0, 2, 0, 0, 0]),
        finding("Không loại trừ dày màng phổi đáy phổi trái.", [0, 2, 0, 0, 0]),
        finding(
            "TD tràn dịch màng phổi hai bên lượng ít trên phim chụp tư thế nằm.",
            [0, 2, 0, 0, 0],
        ),
        finding("Hình ảnh gợi ý tràn dịch rãnh liên thùy lớn bên phải.", [0, 2, 0, 0, 0]),
        finding("Nghi ngờ vôi hóa màng phổi thành trái.", [0, 2, 0, 0, 0]),
    ],
    // parenchyma
    &[
        finding("Đông đặc thùy dưới phổi trái có hình phế quản hơi.", [0, 0, 1, 0, 0]),
        finding("Đám mờ không đều đỉnh phổi phải, theo dõi lao phổi.", [0, 0, 1, 0, 0]),
        finding(
            "Nhiều nốt mờ kích thước khác nhau rải rác hai phổi, theo dõi di căn.",
            [0, 0, 1, 0, 0],
        ),
        finding(
            "Nốt mờ đơn độc đường kính 15 mm thùy trên phổi trái, bờ tua gai.",
            [0, 0, 1, 0, 0],
        ),
        finding("Khối mờ lớn rốn phổi phải, bờ không đều.", [0, 0, 1, 0, 0]),
        finding(
            "Rốn phổi hai bên đậm nhẹ, dày thành phế quản cạnh rốn.",
            [0, 0, 1, 0, 0],
        ),
        finding("Tăng đậm vân phổi hai bên, dày thành phế quản.", [0, 0, 1, 0, 0]),
        finding(
            "Phổi hai bên ứ khí, vòm hoành thấp và dẹt, các khoang liên sườn rộng ra.",
            [0, 0, 1, 0, 0],
        ),
        finding(
            "Hình ảnh khí phế thũng, phổi hai bên tăng sáng, tim hình giọt nước.",
            [0, 0, 1, 0, 0],
        ),
        finding("Kén khí lớn vùng đỉnh phổi trái, thành mỏng.", [0, 0, 1, 0, 0]),
        finding(
            "Xơ hóa và vôi hóa rải rác hai đỉnh phổi, di chứng lao cũ.",
            [0, 0, 1, 0, 0],
        ),
        finding(
            "Tổn thương dạng hang kích thước 3 cm thùy trên phổi phải, có mức khí dịch.",
            [0, 0, 1, 0, 0],
        ),
        finding("Mờ kính rải rác vùng ngoại vi hai đáy phổi.", [0, 0, 1, 0, 0]),
        finding("Dày tổ chức kẽ lan tỏa hai phổi dạng lưới nốt.", [0, 0, 1, 0, 0]),
        finding("Ứ huyết phổi, có đường Kerley B ở hai đáy.", [0, 0, 1, 0, 0]),
        finding(
            "Phù phổi dạng cánh bướm quanh hai rốn phổi, bóng tim to.",
            [0, 0, 1, 1, 0],
        ),
        finding(
            "Xẹp thùy trên phổi phải, rãnh liên thùy bé bị kéo lên, khí quản lệch phải.",
            [0, 0, 1, 1, 0],
        ),
        finding("Xẹp phổi dạng dải đáy phổi trái.", [0, 0, 1, 0, 0]),
        finding("Giãn phế quản thùy dưới hai bên, hình ảnh đường ray.", [0, 0, 1, 0, 0]),
        finding("Nốt vôi hóa 5 mm vùng giữa phổi trái.", [0, 0, 1, 0, 0]),
        finding(
            "Nốt mờ chồng hình cung trước xương sườn 2 bên phải, đường kính khoảng 8 mm.",
            [0, 0, 1, 0, 0],
        ),
        finding("Đụng dập nhu mô phổi phải vùng ngoại vi.", [0, 0, 1, 0, 0]),
        finding("Thâm nhiễm không thuần nhất thùy giữa phổi phải.", [0, 0, 1, 0, 0]),
        finding("Hình ảnh viêm phổi thùy trên phổi trái.", [0, 0, 1, 0, 0]),
        finding("Dải xơ mảnh đáy phổi phải.", [0, 0, 1, 0, 0]),
        finding(
            "Mờ toàn bộ phế trường trái, khí quản bị kéo sang trái, xẹp phổi trái.",
            [0, 0, 1, 1, 0],
        ),
        finding(
            "Đám mờ thùy dưới phổi phải kèm tràn dịch màng phổi phải lượng ít.",
            [0, 1, 1, 0, 0],
        ),
        finding("Các nhánh phế huyết quản tăng đậm, rốn phổi rộng.", [0, 0, 1, 0, 0]),
        finding("Nốt mờ vùng hạ đòn phải, ranh giới không rõ.", [0, 0, 1, 0, 0]),
        finding(
            "Nốt mờ đơn độc 18 mm thùy dưới phổi phải, không loại trừ u phổi.",
            [0, 0, 1, 0, 0],
        ),
        finding("Nghi nốt mờ nhỏ đáy phổi phải, đề nghị chụp CT ngực.", [0, 0, 2, 0, 0]),
        finding(
            "Không loại trừ đông đặc thùy dưới phổi trái sau bóng tim.",
            [0, 0, 2, 0, 0],
        ),
        finding("Có thể viêm phổi kẽ hai đáy.", [0, 0, 2, 0, 0]),
        finding("TD viêm phế quản phổi hai bên.", [0, 0, 2, 0, 0]),
        finding("Rốn phổi trái đậm (?).", [0, 0, 2, 0, 0]),
        finding("Hình ảnh gợi ý ứ huyết phổi nhẹ.", [0, 0, 2, 0, 0]),
        finding("Nghi ngờ thâm nhiễm đỉnh phổi phải.", [0, 0, 2, 0, 0]),
        finding("Theo dõi xẹp phổi nhẹ thùy dưới phổi trái.", [0, 0, 2, 0, 0]),
    ],
    // cardiac
    &[
        finding("Bóng tim to vừa, chỉ số tim ngực khoảng 0,62.", [0, 0, 0, 1, 0]),
        finding("Tim to nhẹ, CTR 0.54.", [0, 0, 0, 1, 0]),
        finding("Chỉ số tim/ngực 58%, cung dưới trái phồng.", [0, 0, 0, 1, 0]),
        finding("Bóng tim to bè ngang, tỷ lệ tim/ngực = 0,65.", [0, 0, 0, 1, 0]),
        finding("Chỉ số tim ngực > 0,5, mỏm tim chúc xuống dưới.", [0, 0, 0, 1, 0]),
        finding("Bóng tim lớn, CTR > 50%.", [0, 0, 0, 1, 0]),
        finding("Tỉ lệ tim ngực 0.57, bóng tim to sang trái.", [0, 0, 0, 1, 0]),
        finding(
            "Bóng tim to toàn bộ, chỉ số tim lồng ngực 0,72, bờ tim rõ nét.",
            [0, 0, 0, 1, 0],
        ),
        finding("Chỉ số tim ngực tăng (~0,6).", [0, 0, 0, 1, 0]),
        finding("Vôi hóa thành quai động mạch chủ dạng vành cung.", [0, 0, 0, 1, 0]),
        finding("Quai động mạch chủ vồng nhẹ, bờ đều.", [0, 0, 0, 1, 0]),
        finding(
            "Quai động mạch chủ giãn và kéo dài, đoạn xuống uốn khúc.",
            [0, 0, 0, 1, 0],
        ),
        finding("Bóng trung thất rộng ra hai bên, bờ không đều.", [0, 0, 0, 1, 0]),
        finding(
            "Khối mờ trung thất trước trên bên trái, bờ rõ, đẩy khí quản sang phải.",
            [0, 0, 0, 1, 0],
        ),
        finding("Khí quản và trung thất lệch sang trái.", [0, 0, 0, 1, 0]),
        finding("Tim to sang hai bên, chỉ số tim ngực 0,68.", [0, 0, 0, 1, 0]),
        finding(
            "Bóng tim to bè hai bên hình bầu nước, theo dõi tràn dịch màng ngoài tim.",
            [0, 0, 0, 1, 0],
        ),
        finding(
            "Bóng tim to, cung dưới trái kéo dài, ứ huyết phổi hai bên.",
            [0, 0, 1, 1, 0],
        ),
        finding(
            "Bóng tim to nhẹ, chỉ số tim ngực 0,53, quai động mạch chủ vồng.",
            [0, 0, 0, 1, 0],
        ),
        finding(
            "Trung thất trên bên phải giãn rộng, không loại trừ phình động mạch chủ lên.",
            [0, 0, 0, 1, 0],
        ),
        finding(
            "Tim to, chỉ số tim ngực 60%, tràn dịch màng phổi phải lượng ít.",
            [0, 1, 0, 1, 0],
        ),
        finding(
            "Trung thất trên rộng ra bên phải do khối hạch cạnh khí quản.",
            [0, 0, 0, 1, 0],
        ),
        finding("Tim to, cung giữa trái phồng, bờ phải có hình bờ đôi.", [0, 0, 0, 1, 0]),
        finding(
            "Trung thất bị kéo sang phải do xơ co kéo đỉnh phổi phải.",
            [0, 0, 1, 1, 0],
        ),
        finding("Cung động mạch chủ giãn, chỉ số tim ngực 0.55.", [0, 0, 0, 1, 0]),
        finding("Chỉ số tim ngực đo được 0,51.", [0, 0, 0, 1, 0]),
        finding("Bóng tim to nhẹ (?).", [0, 0, 0, 2, 0]),
        finding("Nghi bóng tim to, phim chụp tư thế nằm.", [0, 0, 0, 2, 0]),
        finding("Có thể tràn dịch màng ngoài tim lượng ít.", [0, 0, 0, 2, 0]),
        finding("Không loại trừ khối mờ trung thất sau.", [0, 0, 0, 2, 0]),
        finding("TD giãn nhĩ trái.", [0, 0, 0, 2, 0]),
        finding("Quai động mạch chủ hơi vồng?, kết hợp lâm sàng.", [0, 0, 0, 2, 0]),
        finding("Hình ảnh gợi ý phì đại thất trái.", [0, 0, 0, 2, 0]),
        finding("Nghi ngờ trung thất trên giãn rộng.", [0, 0, 0, 2, 0]),
    ],
    // other (outside the four regions)
    &[
        finding("Hình liềm hơi tự do dưới vòm hoành phải.", [0, 0, 0, 0, 1]),
        finding(
            "Liềm hơi dưới hai vòm hoành, theo dõi thủng tạng rỗng.",
            [0, 0, 0, 0, 1],
        ),
        finding("Dị vật cản quang hình đồng xu ở thực quản đoạn cổ.", [0, 0, 0, 0, 1]),
        finding("Dị vật kim loại trong dạ dày.", [0, 0, 0, 0, 1]),
        finding(
            "Thoát vị hoành trái, có quai ruột chứa hơi trên vòm hoành trái.",
            [0, 0, 0, 0, 1],
        ),
        finding(
            "Bóng hơi có mức dịch sau bóng tim, phù hợp thoát vị khe thực quản.",
            [0, 0, 0, 0, 1],
        ),
        finding("Tim nằm bên phải lồng ngực, mỏm tim hướng sang phải.", [0, 0, 0, 0, 1]),
        finding(
            "Đảo ngược phủ tạng: tim bên phải, bóng hơi dạ dày bên phải.",
            [0, 0, 0, 0, 1],
        ),
        finding("Mức hơi dịch trong các quai ruột vùng hạ sườn trái.", [0, 0, 0, 0, 1]),
        finding("Vài nốt vôi hóa vùng hạ sườn phải, gợi ý sỏi túi mật.", [0, 0, 0, 0, 1]),
        finding("Dạ dày giãn chứa nhiều hơi và dịch.", [0, 0, 0, 0, 1]),
        finding("Vôi hóa tuyến giáp vùng cổ phải.", [0, 0, 0, 0, 1]),
        finding("Nghi liềm hơi dưới vòm hoành trái.", [0, 0, 0, 0, 2]),
        finding("Có thể dị vật cản quang ở thực quản ngực.", [0, 0, 0, 0, 2]),
        finding("Không loại trừ thoát vị khe thực quản.", [0, 0, 0, 0, 2]),
    ],
];

/// Change-over-time sentences: findings gone (labels all 0) or reduced but present, at
/// least 10.
pub const CHANGES: &[Finding] = &[
    finding(
        "So với phim ngày 05/3, tràn dịch màng phổi phải đã hết.",
        [0, 0, 0, 0, 0],
    ),
    finding(
        "Đối chiếu phim cũ, tràn khí màng phổi trái đã hấp thu hoàn toàn.",
        [0, 0, 0, 0, 0],
    ),
    finding(
        "Đám mờ thùy dưới phổi phải không còn so với phim trước.",
        [0, 0, 0, 0, 0],
    ),
    finding(
        "Tràn khí dưới da vùng cổ ngực đã hết so với lần chụp trước.",
        [0, 0, 0, 0, 0],
    ),
    finding("Các nốt mờ hai đáy phổi đã hấp thu hết sau điều trị.", [0, 0, 0, 0, 0]),
    finding(
        "Góc sườn hoành phải nhọn trở lại, không còn dịch so với phim ngày 12/4.",
        [0, 0, 0, 0, 0],
    ),
    finding(
        "Phù phổi đã hết, bóng tim không to so với lần chụp trước.",
        [0, 0, 0, 0, 0],
    ),
    finding("Xẹp thùy dưới phổi trái đã nở lại hoàn toàn.", [0, 0, 0, 0, 0]),
    finding(
        "Tràn dịch màng phổi trái giảm, còn ít dịch ở góc sườn hoành trái.",
        [0, 1, 0, 0, 0],
    ),
    finding(
        "So với phim cũ, đám mờ đỉnh phổi phải thu nhỏ, còn ít dải mờ.",
        [0, 0, 1, 0, 0],
    ),
    finding(
        "Tràn khí màng phổi phải giảm nhiều sau dẫn lưu, còn khí lượng ít vùng đỉnh.",
        [0, 1, 0, 0, 0],
    ),
    finding(
        "Bóng tim nhỏ hơn phim trước nhưng còn to, chỉ số tim ngực 0,55.",
        [0, 0, 0, 1, 0],
    ),
    finding(
        "Tổn thương thâm nhiễm hai phổi thuyên giảm, còn ít mờ kính vùng đáy phải.",
        [0, 0, 1, 0, 0],
    ),
    finding(
        "Tràn khí dưới da thành ngực trái giảm, còn ít ở vùng nách.",
        [1, 0, 0, 0, 0],
    ),
    finding(
        "Sau dẫn lưu, trung thất đã về đường giữa, còn tràn dịch màng phổi phải lượng ít.",
        [0, 1, 0, 0, 0],
    ),
];

/// Support devices and technique remarks (not abnormal): at least 10 each.
pub const DEVICES: &[&str] = &[
    "Máy tạo nhịp tim đặt dưới da vùng ngực trái, đầu điện cực ở thất phải.",
    "Đầu ống nội khí quản cách carina khoảng 4 cm.",
    "Đặt catheter tĩnh mạch trung tâm qua tĩnh mạch dưới đòn phải, đầu ở tĩnh mạch chủ trên.",
    "Ống dẫn lưu khoang màng phổi trái, đầu ống hướng lên đỉnh.",
    "Điện cực điện tâm đồ dán trên thành ngực trước.",
    "Ống thông mũi dạ dày, đầu ống nằm trong dạ dày.",
    "Catheter tĩnh mạch cảnh trong phải, đầu ở vị trí tĩnh mạch chủ trên.",
    "Buồng tiêm truyền dưới da ngực phải, catheter đi vào tĩnh mạch chủ trên.",
    "Canuyn mở khí quản ở vị trí đường giữa.",
    "Máy phá rung cấy dưới da vùng ngực trái với hai dây điện cực.",
    "Catheter PICC tay phải, đầu catheter ở đoạn cuối tĩnh mạch chủ trên.",
    "Ống nội khí quản đúng vị trí, đầu ống trên carina.",
];

/// Technique remarks (not abnormal).
pub const TECHNIQUE: &[&str] = &[
    "Phim chụp tư thế nằm tại giường (AP).",
    "Bệnh nhân hít vào chưa đủ sâu, đỉnh vòm hoành phải ngang cung sau xương sườn 8.",
    "Phim chụp hơi xoay lệch sang phải.",
    "Phim chụp thì thở ra.",
    "Tia hơi cứng, phim đen.",
    "Phim chụp tư thế đỉnh ưỡn.",
    "Kích thước bóng tim khó đánh giá chính xác do chụp tư thế nằm.",
    "Phim chụp tư thế ngồi, tia trước sau.",
    "Chất lượng phim đạt yêu cầu chẩn đoán.",
    "Bệnh nhân thở máy, chụp tại giường.",
    "Tia hơi mềm, phim sáng.",
    "Bờ ngoài phế trường phải bị cắt một phần khỏi phim.",
    "Chụp X-quang ngực thẳng tư thế đứng, tia sau trước (PA).",
];

/// Section headers per region, as radiologists write them before a colon ("Tim", "Bóng
/// tim", "Phổi", "Phế trường", "Màng phổi", "Xương", ...): at least 4 each.
pub const HEADERS: [&[&str]; 4] = [
    &[
        "Xương",
        "Khung xương",
        "Xương lồng ngực",
        "Thành ngực",
        "Xương và phần mềm thành ngực",
        "Xương - phần mềm",
    ],
    &[
        "Màng phổi",
        "Góc sườn hoành",
        "Cơ hoành",
        "Cơ hoành, góc sườn hoành",
        "Màng phổi - cơ hoành",
        "Vòm hoành",
    ],
    &[
        "Phổi",
        "Phế trường",
        "Nhu mô phổi",
        "Phổi 2 bên",
        "Hai phổi",
        "Phổi hai bên",
    ],
    &[
        "Tim",
        "Bóng tim",
        "Tim - trung thất",
        "Tim và trung thất",
        "Trung thất",
        "Tim mạch",
    ],
];

/// Conclusion lines ("Kết luận: ..."-less text) for a normal and an abnormal study: 6+ each.
pub const NORMAL_CONCLUSIONS: &[&str] = &[
    "Tim phổi chưa thấy bất thường trên phim này.",
    "Hiện chưa phát hiện tổn thương tim phổi trên X-quang ngực thẳng.",
    "Phim X-quang ngực thẳng trong giới hạn bình thường.",
    "Không thấy bất thường tim, phổi, màng phổi và khung xương.",
    "Chưa ghi nhận hình ảnh bệnh lý tim phổi.",
    "X-quang ngực thẳng không thấy dấu hiệu bệnh lý.",
    "Tim phổi hiện tại bình thường.",
];

/// Conclusions for an abnormal study (generic: the findings are in the description).
pub const ABNORMAL_CONCLUSIONS: &[&str] = &[
    "Hình ảnh X-quang ngực như mô tả, đề nghị kết hợp lâm sàng.",
    "Có hình ảnh bất thường trên phim, đề nghị đối chiếu lâm sàng.",
    "Tổn thương như mô tả ở trên.",
    "Bất thường như mô tả, đề nghị khám chuyên khoa.",
    "Hình ảnh như mô tả, đề nghị chụp CT ngực để đánh giá thêm.",
    "Phim ngực có bất thường, kết hợp lâm sàng và xét nghiệm.",
    "Các tổn thương như đã nêu, đề nghị tái khám theo hẹn.",
];

/// Abbreviations of the terse style: (full text as it occurs in the sentences above,
/// abbreviation), e.g. ("tràn dịch màng phổi", "TDMP"), ("góc sườn hoành", "GSH"),
/// ("không", "ko"), ("bình thường", "bt"), ("hai bên", "2 bên"), ("động mạch chủ", "ĐMC").
/// At least 10. A longer phrase comes before any shorter one inside it ("tràn dịch màng
/// phổi" before "màng phổi"), so replacing them in order is safe.
pub const ABBREVIATIONS: &[(&str, &str)] = &[
    ("tràn máu - tràn khí màng phổi", "TM-TKMP"),
    ("tràn dịch màng phổi", "TDMP"),
    ("tràn khí màng phổi", "TKMP"),
    ("tràn khí dưới da", "TKDD"),
    ("khung xương lồng ngực", "KXLN"),
    ("góc sườn hoành", "GSH"),
    ("động mạch chủ", "ĐMC"),
    ("chỉ số tim ngực", "CTR"),
    ("catheter tĩnh mạch trung tâm", "CVC"),
    ("ống nội khí quản", "NKQ"),
    ("màng phổi", "MP"),
    ("xương sườn", "xs"),
    ("cột sống", "CS"),
    ("đường kính", "ĐK"),
    ("theo dõi", "TD"),
    ("bình thường", "bt"),
    ("hai bên", "2 bên"),
    ("bên phải", "(P)"),
    ("bên trái", "(T)"),
    ("không", "ko"),
];

/// Typing slips: (correct, slipped) pairs a keyboard or a hurried radiologist makes
/// (a wrong or missing tone mark, a dropped letter, "dày"→"dầy", "giãn"→"dãn"). At least 12.
pub const SLIPS: &[(&str, &str)] = &[
    ("dày", "dầy"),
    ("giãn", "dãn"),
    ("hoành", "hòanh"),
    ("tràn dịch", "tràn dich"),
    ("gãy", "gẫy"),
    ("trung thất", "trúng thất"),
    ("thâm nhiễm", "thâm nhiểm"),
    ("nhọn", "nhon"),
    ("không", "khôg"),
    ("phế trường", "phế trườg"),
    ("hóa", "hoá"),
    ("thùy", "thuỳ"),
    ("đậm", "đạm"),
    ("xẹp", "xệp"),
    ("mờ", "mơ"),
    ("phổi", "phôi"),
    ("xương", "xuơng"),
    ("tràn khí", "tràn khi"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every sentence of the bank (not headers).
    fn sentences() -> Vec<&'static str> {
        let mut all: Vec<&'static str> = Vec::new();
        for list in NORMAL {
            all.extend_from_slice(list);
        }
        for list in FINDINGS {
            all.extend(list.iter().map(|f| f.text));
        }
        all.extend(CHANGES.iter().map(|f| f.text));
        all.extend_from_slice(DEVICES);
        all.extend_from_slice(TECHNIQUE);
        all.extend_from_slice(NORMAL_CONCLUSIONS);
        all.extend_from_slice(ABNORMAL_CONCLUSIONS);
        all
    }

    fn labelled() -> impl Iterator<Item = &'static Finding> {
        FINDINGS.iter().flat_map(|list| list.iter()).chain(CHANGES.iter())
    }

    #[test]
    fn counts_reach_the_minimums() {
        for (r, list) in NORMAL.iter().enumerate() {
            assert!(list.len() >= 25, "NORMAL[{r}] has {}", list.len());
        }
        for (r, list) in FINDINGS.iter().enumerate() {
            let min = if r < 4 { 25 } else { 12 };
            assert!(list.len() >= min, "FINDINGS[{r}] has {}", list.len());
        }
        for (r, list) in FINDINGS.iter().enumerate().take(4) {
            let uncertain = list.iter().filter(|f| f.labels[r] == 2).count();
            assert!(uncertain >= 4, "FINDINGS[{r}] has {uncertain} uncertain");
        }
        assert!(CHANGES.len() >= 10);
        assert!(DEVICES.len() >= 10);
        assert!(TECHNIQUE.len() >= 10);
        for (r, list) in HEADERS.iter().enumerate() {
            assert!(list.len() >= 4, "HEADERS[{r}] has {}", list.len());
        }
        assert!(NORMAL_CONCLUSIONS.len() >= 6);
        assert!(ABNORMAL_CONCLUSIONS.len() >= 6);
        assert!(ABBREVIATIONS.len() >= 10);
        assert!(SLIPS.len() >= 12);
    }

    #[test]
    fn every_sentence_is_one_sentence_ending_with_a_dot() {
        for s in sentences() {
            assert!(s.ends_with('.'), "no final dot: {s}");
            assert!(!s[..s.len() - 1].contains(". "), "more than one sentence: {s}");
            assert!(!s.contains('\n') && s.trim() == s, "stray whitespace: {s:?}");
            assert!(
                s.chars().next().is_some_and(char::is_uppercase),
                "lower-case start: {s}"
            );
        }
    }

    #[test]
    fn headers_are_bare_names() {
        for h in HEADERS.iter().flat_map(|l| l.iter()) {
            assert!(!h.is_empty() && h.trim() == *h, "{h:?}");
            assert!(!h.ends_with(':') && !h.ends_with('.'), "{h:?}");
        }
    }

    #[test]
    fn no_text_is_duplicated() {
        let mut seen = HashSet::new();
        let headers = HEADERS.iter().flat_map(|l| l.iter().copied());
        for s in sentences().into_iter().chain(headers) {
            assert!(seen.insert(s), "duplicated: {s}");
        }
    }

    #[test]
    fn findings_set_their_own_region() {
        for (r, list) in FINDINGS.iter().enumerate() {
            for f in list.iter() {
                assert_ne!(f.labels[r], 0, "FINDINGS[{r}] does not set its region: {}", f.text);
            }
        }
    }

    #[test]
    fn labels_are_0_1_or_2() {
        for f in labelled() {
            assert!(f.labels.iter().all(|&v| v <= 2), "{f:?}");
        }
    }

    #[test]
    fn changes_are_gone_or_still_present() {
        let gone = CHANGES.iter().filter(|f| f.labels == [0; 5]).count();
        assert!(gone >= 1 && gone < CHANGES.len());
        for f in CHANGES {
            assert!(f.labels.iter().all(|&v| v <= 1), "a change is never uncertain: {f:?}");
        }
    }

    #[test]
    fn abbreviations_and_slips_apply_to_the_bank() {
        let all = sentences();
        for &(full, short) in ABBREVIATIONS.iter().chain(SLIPS) {
            assert!(!full.is_empty() && full != short, "({full}, {short})");
            assert!(all.iter().any(|s| s.contains(full)), "{full:?} occurs in no sentence");
        }
    }

    #[test]
    fn longer_abbreviated_phrases_come_first() {
        for (i, &(later, _)) in ABBREVIATIONS.iter().enumerate() {
            for &(earlier, _) in &ABBREVIATIONS[..i] {
                assert!(!later.contains(earlier), "{earlier:?} would spoil {later:?}");
            }
        }
    }

    #[test]
    fn normal_sentences_are_not_hedged() {
        for s in NORMAL.iter().flat_map(|l| l.iter()) {
            assert!(!s.contains('?'), "{s}");
            for cue in ["nghi", "theo dõi", "loại trừ", "gợi ý", "có thể"] {
                assert!(!s.to_lowercase().contains(cue), "{s}");
            }
        }
    }
}
