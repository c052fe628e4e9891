//! The kernel's floor for big-room fan-out on this machine: what writing one
//! small frame to each of N loopback TCP sockets costs with no server at all
//! (no WebSocket, no queue, no runtime on the writing side: one thread, one
//! `write` per socket). A server's per-delivery cost can only be above it.
//!
//! Two processes (each needs N descriptors):
//!
//! ```sh
//! taskset -c 1 cargo run --release -p palaver-loadgen --example loopback_floor -- sink 127.0.0.1:7100 15000 &
//! taskset -c 0 cargo run --release -p palaver-loadgen --example loopback_floor -- source 127.0.0.1:7100 15000 10 10
//! ```
//!
//! `source ADDR N RATE SECONDS` connects N sockets, then RATE times a second
//! writes one 200-byte frame to every socket in turn, and reports the CPU it
//! used per write and how long each round took from the first write to the
//! last (the spread a member at the end of the room sees on top of everything
//! else). `sink ADDR N` accepts N connections and reads them (the members).

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    let count: usize = arg(2).parse().unwrap_or_else(|_| usage());
    match arg(0) {
        "sink" => sink(arg(1), count),
        "source" => {
            let rate: u32 = arg(3).parse().unwrap_or_else(|_| usage());
            let seconds: u32 = arg(4).parse().unwrap_or_else(|_| usage());
            source(arg(1), count, rate, seconds)
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: loopback_floor sink ADDR N | source ADDR N RATE SECONDS");
    std::process::exit(2)
}

/// Accepts `count` connections and drains them on one thread (a tokio
/// runtime, as a client process reads its sockets).
fn sink(addr: &str, count: usize) {
    let listener = TcpListener::bind(addr).expect("bind");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("rt");
    runtime.block_on(async move {
        use tokio::io::AsyncReadExt;
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let (stream, _) = listener.accept().expect("accept");
            stream.set_nonblocking(true).expect("nonblocking");
            let mut stream = tokio::net::TcpStream::from_std(stream).expect("register");
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            }));
        }
        eprintln!("sink: {count} connections");
        for task in tasks {
            let _ = task.await;
        }
    });
}

fn source(addr: &str, count: usize, rate: u32, seconds: u32) {
    let mut streams: Vec<TcpStream> = (0..count)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s
        })
        .collect();
    // A server text frame of a chat message: 2-byte header, ~200 bytes of JSON.
    let mut frame = vec![0x81u8, 126, 0, 198];
    frame.extend(std::iter::repeat_n(b'x', 198));
    std::thread::sleep(Duration::from_secs(1));
    let period = Duration::from_secs(1) / rate;
    let rounds = rate * seconds;
    let cpu_before = cpu_seconds();
    let began = Instant::now();
    let mut spreads = Vec::with_capacity(rounds as usize);
    let mut next = Instant::now();
    for _ in 0..rounds {
        let start = Instant::now();
        for stream in &mut streams {
            stream.write_all(&frame).expect("write");
        }
        spreads.push(start.elapsed());
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = cpu_seconds() - cpu_before;
    let elapsed = began.elapsed().as_secs_f64();
    let writes = f64::from(rounds) * count as f64;
    spreads.sort();
    let at = |q: f64| spreads[((spreads.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{count} sockets x {rate} rounds/s, {rounds} rounds in {elapsed:.1} s: {:.2} µs CPU per \
         write ({:.2} cores); round from first to last write: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        cpu * 1e6 / writes,
        cpu / elapsed,
        at(0.5),
        at(0.99),
        at(1.0),
    );
}

/// This process's user + system CPU time (`/proc/self/stat`, clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}
