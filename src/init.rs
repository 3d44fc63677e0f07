//! `pipe init DIR`: a starting project outside the tool's repository.

use std::path::Path;

pub fn init(_dir: &Path, _pacs: &str, _his: &str, _out: &mut impl std::io::Write) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
