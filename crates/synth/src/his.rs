//! Writing HIS session files: one XML file per session, its header and its reports.

use quick_xml::escape::escape;

use super::hospital::Study;

/// Time format of the synthetic HIS (the parse stage's default).
pub const TIME_FORMAT: &str = "%d/%m/%Y %H:%M:%S";

/// The XML text of a study's session.
pub fn session_xml(study: &Study) -> String {
    let t = |d: &chrono::NaiveDateTime| d.format(TIME_FORMAT).to_string();
    let decl = if study.utf16 { "UTF-16" } else { "UTF-8" };
    let mut x = format!("<?xml version=\"1.0\" encoding=\"{decl}\"?>\n<SESSION version=\"2.1\">\n");
    x += &format!("  <SESSION_ID>{}</SESSION_ID>\n", study.session_id);
    x += &format!("  <PATIENT_ID>{}</PATIENT_ID>\n", study.patient_id);
    x += &format!(
        "  <PATIENT_NAME>{}</PATIENT_NAME>\n",
        escape(study.patient_name.replace('^', " ").as_str())
    );
    x += &format!("  <CHECK_IN_TIME>{}</CHECK_IN_TIME>\n", t(&study.check_in));
    x += &format!("  <CHECK_OUT_TIME>{}</CHECK_OUT_TIME>\n", t(&study.check_out));
    x += "  <REPORTS>\n";
    for r in &study.reports {
        x += "    <REPORT>\n";
        x += &format!("      <SERVICE_ID>{}</SERVICE_ID>\n", r.service_id);
        x += &format!("      <SERVICE_NAME>{}</SERVICE_NAME>\n", escape(r.service_name));
        x += &format!("      <REPORT_TIME>{}</REPORT_TIME>\n", t(&r.report_time));
        x += &format!("      <DESCRIPTION>{}</DESCRIPTION>\n", escape(r.description.as_str()));
        x += &format!("      <CONCLUSION>{}</CONCLUSION>\n", escape(r.conclusion.as_str()));
        x += "    </REPORT>\n";
    }
    x += "  </REPORTS>\n</SESSION>\n";
    x
}

/// The bytes of the file: UTF-8, or UTF-16LE with a byte-order mark; malformed ones are
/// cut off in the middle of a report, as a crashed export leaves them.
pub fn session_bytes(study: &Study, malformed: bool) -> Vec<u8> {
    let mut text = session_xml(study);
    if malformed {
        let cut = text.find("</REPORT_TIME>").map(|p| p + 5).unwrap_or(text.len() / 2);
        text.truncate(cut);
    }
    if study.utf16 {
        let mut out = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    } else {
        text.into_bytes()
    }
}
