//! The `taskdist` command line.

fn main() -> anyhow::Result<()> {
    Ok(())
}
