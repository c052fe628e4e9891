//! Redis CPU per published message, measured on a real `redis-server`.
//!
//! Publishes `--messages` chat messages into `--rooms` rooms through one
//! [`RedisBroker`] (every room subscribed, as a gateway with members would be,
//! each publish showing the node's witness as the gateway does), with
//! `--concurrency` publishes in flight, and reads the server's CPU time from
//! `/proc/<pid>/stat` before and after. Prints one JSON line.
//!
//! ```sh
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run --release -p palaver-broker --example redis_cost -- \
//!     --url redis://127.0.0.1:6390 --pid $(pgrep -f 'redis-server.*6390')
//! ```

use std::{sync::Arc, time::Instant};

use futures_util::{StreamExt, stream};
use palaver_broker::{Broker, Draft, Inbox, RedisBroker, RedisConfig};
use palaver_protocol::{ClientMessageId, Envelope, RoomName, UserName, Witness};

struct Count(std::sync::atomic::AtomicU64);

impl Inbox for Count {
    fn deliver(&self, _envelope: Envelope) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn bus_state(&self, _up: bool) {}
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("redis pid");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    let url = arg("--url", "redis://127.0.0.1:6379");
    let pid: u32 = arg("--pid", "0").parse().expect("--pid");
    let rooms: usize = arg("--rooms", "1000").parse().expect("--rooms");
    let messages: usize = arg("--messages", "50000").parse().expect("--messages");
    let concurrency: usize = arg("--concurrency", "64").parse().expect("--concurrency");
    let inbox = Arc::new(Count(Default::default()));
    let mut config = RedisConfig::new(url, "cost");
    config.prefix = format!("cost{}", std::process::id());
    let broker = RedisBroker::connect(config, inbox.clone()).await.expect("broker");
    let names: Vec<RoomName> =
        (0..rooms).map(|i| RoomName::parse(&format!("room-{i}")).expect("valid")).collect();
    for room in &names {
        broker.subscribe(room).await.expect("subscribe");
    }
    let user = UserName::parse("ann").expect("valid");
    let witnesses: Vec<parking_lot::Mutex<Option<Witness>>> =
        (0..rooms).map(|_| parking_lot::Mutex::new(None)).collect();
    let text = "x".repeat(100);
    let cpu_before = if pid > 0 { cpu_seconds(pid) } else { 0.0 };
    let started = Instant::now();
    stream::iter(0..messages)
        .for_each_concurrent(concurrency, |n| {
            let (broker, names, user, text, witnesses) =
                (&broker, &names, &user, &text, &witnesses);
            async move {
                let room = n % names.len();
                let id = ClientMessageId::parse(&format!("m{n}")).expect("valid");
                let witness = witnesses[room].lock().clone();
                let draft = Draft {
                    id: id.clone(),
                    user: user.clone(),
                    text: text.clone(),
                    trace: None,
                    witness,
                };
                let p = broker.publish(&names[room], draft).await.expect("publish");
                let seen =
                    Witness { epoch: p.epoch, seq: p.seq, id: Some(id), user: Some(user.clone()) };
                let mut w = witnesses[room].lock();
                if w.as_ref().is_none_or(|w| w.seq < seen.seq) {
                    *w = Some(seen);
                }
            }
        })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = if pid > 0 { cpu_seconds(pid) - cpu_before } else { f64::NAN };
    // Let the last deliveries arrive.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    println!(
        "{{\"messages\":{messages},\"rooms\":{rooms},\"concurrency\":{concurrency},\"seconds\":{elapsed:.3},\"msgs_per_s\":{:.0},\"redis_cpu_us_per_msg\":{:.2},\"delivered\":{}}}",
        messages as f64 / elapsed,
        cpu * 1e6 / messages as f64,
        inbox.0.load(std::sync::atomic::Ordering::Relaxed)
    );
    broker.close().await;
}
