//! Walk N variants of the catalog's 10^12-variant space (`huge`) and print throughput and
//! peak resident memory (VmHWM from /proc/self/status, Linux only).
//!
//! ```sh
//! cargo run --release -p taskdist-tasksets --example space_mem -- 100000000
//! ```
//! The optional argument is N (default 10^8); a second optional argument is a spec name or path.

use std::time::Instant;

use taskdist_tasksets::{Spec, TaskSet};

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no /proc/self/status)".into())
}

/// Nanoseconds this thread has run on a CPU (/proc/thread-self/schedstat), if available.
/// On a shared machine this is the fairer measure: wall time also counts waiting for a core.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn rate(n: u64, wall: f64, cpu: Option<(u64, u64)>) -> String {
    let mut s = format!("{:.2} M variants/s wall", n as f64 / wall / 1e6);
    if let Some((a, b)) = cpu {
        let secs = (b.saturating_sub(a)) as f64 / 1e9;
        if secs > 0.0 {
            s += &format!(", {:.2} M variants/s per CPU-second", n as f64 / secs / 1e6);
        }
    }
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = match args.next() {
        Some(a) => a.parse()?,
        None => 100_000_000,
    };
    let name = args.next().unwrap_or_else(|| "huge".to_string());
    let spec = Spec::load(&name)?;
    let space = spec.space();
    println!("spec {name}: {} variants", space.len());
    println!("peak memory before walking: {}", vm_hwm());

    let mut set = TaskSet::default();
    let mut checksum = 0u64;
    let c0 = cpu_ns();
    let t = Instant::now();
    let mut it = space.iter();
    for _ in 0..n {
        if it.next_into(&mut set).is_none() {
            break;
        }
        checksum = checksum.wrapping_add(u64::from(set.tasks[0].priority));
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = c0.zip(cpu_ns());
    println!(
        "enumerated {n} variants in {secs:.2} s: {} (checksum {checksum})",
        rate(n, secs, cpu)
    );

    let m = n / 10;
    let mut xml = String::new();
    let mut bytes = 0usize;
    let c0 = cpu_ns();
    let t = Instant::now();
    let mut it = space.iter_from(n);
    for _ in 0..m {
        if it.next_into(&mut set).is_none() {
            break;
        }
        xml.clear();
        set.write_xml(&mut xml);
        bytes += xml.len();
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = c0.zip(cpu_ns());
    println!(
        "with XML: {m} variants in {secs:.2} s: {} ({bytes} bytes)",
        rate(m, secs, cpu)
    );
    // The last variant of the whole space, built directly from its index.
    let last = space.get(999_999_999_999)?;
    println!(
        "variant 999999999999 priorities: {:?}",
        last.tasks.iter().map(|t| t.priority).collect::<Vec<_>>()
    );
    println!("peak memory (VmHWM): {}", vm_hwm());
    Ok(())
}
