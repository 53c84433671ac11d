//! `pgbroadcast bench floor`: what fan-out costs on this machine at the
//! least. One thread writes a 150-byte WebSocket text frame to each of N
//! loopback TCP sockets per signal, one non-blocking `write` per socket, at a
//! signal rate; another thread reads them all. The writer's own CPU time
//! (`getrusage(RUSAGE_THREAD)`) per write is the floor a server's CPU per
//! delivery can be held against: on loopback the sender's system call also
//! does the receiver's TCP work.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::resource::{UsageWho, getrusage};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::load::SOURCE_ADDRESSES;

/// `pgbroadcast bench floor` options.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Sockets written to per signal.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Signals per second (each is one write to every socket).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to write (`8s`; a bare number is seconds).
    #[arg(long, default_value = "8s", value_parser = pgbroadcast::config::parse_duration)]
    pub duration: Duration,
}

/// Bytes of one frame: a WebSocket text frame header and 148 bytes of text,
/// the size of a signal.
pub const FRAME_BYTES: usize = 150;

/// What one floor run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub clients: usize,
    pub rate: f64,
    pub duration_s: f64,
    /// Complete writes (a write the socket could not take at once is not retried).
    pub writes: u64,
    /// Writes the socket buffer refused or took only in part.
    pub short_writes: u64,
    pub writes_per_s: f64,
    /// The writing thread's CPU time (user + system).
    pub cpu_s: f64,
    pub cpu_percent: f64,
    pub us_per_write: f64,
    pub cpu_s_per_100k: f64,
}

impl Floor {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "floor: {} sockets × {} signals/s for {:.0} s: {:.0} writes/s, writer {:.0}% of a core, {:.2} µs per write, {:.2} CPU-s per 100k writes{}",
            self.clients,
            self.rate,
            self.duration_s,
            self.writes_per_s,
            self.cpu_percent,
            self.us_per_write,
            self.cpu_s_per_100k,
            if self.short_writes > 0 {
                format!(" ({} short writes)", self.short_writes)
            } else {
                String::new()
            }
        )
    }
}

/// Runs the probe (blocking: call it from a thread of its own).
pub fn run(args: &FloorArgs) -> std::io::Result<Floor> {
    let clients = args.clients.max(1);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // The reader: its own thread and runtime, one task per socket.
    let reader = std::thread::Builder::new()
        .name("floor-reader".into())
        .spawn(move || read_all(addr, clients))?;
    let mut sockets = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        sockets.push(socket);
    }
    let mut frame = [b'x'; FRAME_BYTES];
    frame[0] = 0x81; // FIN, text
    frame[1] = (FRAME_BYTES - 2) as u8;

    // At a rate: duration × rate signals, each due one period after the
    // last; at rate 0: as many as fit in the duration.
    let paced = args.rate > 0.0;
    let signals = if paced {
        (args.duration.as_secs_f64() * args.rate).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    let period = Duration::from_secs_f64(if paced { 1.0 / args.rate } else { 0.0 });
    let cpu0 = thread_cpu()?;
    let t0 = Instant::now();
    let (mut writes, mut short) = (0u64, 0u64);
    for signal in 1..=signals {
        for socket in &mut sockets {
            match socket.write(&frame) {
                Ok(FRAME_BYTES) => writes += 1,
                _ => short += 1,
            }
        }
        if !paced && t0.elapsed() >= args.duration {
            break;
        }
        if let Some(wait) =
            (t0 + period.mul_f64(signal as f64)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    }
    let cpu_s = (thread_cpu()? - cpu0).as_secs_f64();
    let secs = t0.elapsed().as_secs_f64();
    drop(sockets);
    reader
        .join()
        .map_err(|_| std::io::Error::other("the reader thread panicked"))??;
    let per_write = cpu_s / writes.max(1) as f64;
    Ok(Floor {
        clients,
        rate: args.rate,
        duration_s: secs,
        writes,
        short_writes: short,
        writes_per_s: writes as f64 / secs,
        cpu_s,
        cpu_percent: cpu_s / secs * 100.0,
        us_per_write: per_write * 1e6,
        cpu_s_per_100k: per_write * 1e5,
    })
}

/// This thread's CPU time, user + system.
fn thread_cpu() -> std::io::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD).map_err(std::io::Error::from)?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok(tv(usage.user_time()) + tv(usage.system_time()))
}

/// Connects `clients` sockets to `addr` and reads each until the writer closes it.
fn read_all(addr: SocketAddr, clients: usize) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let mut streams = Vec::with_capacity(clients);
        for i in 0..clients {
            let socket = tokio::net::TcpSocket::new_v4()?;
            let source = Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCE_ADDRESSES as usize) as u8);
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
            let stream = socket.connect(addr).await?;
            stream.set_nodelay(true)?;
            streams.push(stream);
        }
        let readers: Vec<_> = streams
            .into_iter()
            .map(|mut stream| {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                })
            })
            .collect();
        for reader in readers {
            let _ = reader.await;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_every_socket_at_the_rate() {
        let floor = run(&FloorArgs {
            clients: 20,
            rate: 50.0,
            duration: Duration::from_millis(400),
        })
        .unwrap();
        // 20 signals in 0.4 s at 50/s, 20 sockets each.
        assert_eq!(floor.writes + floor.short_writes, 20 * 20, "{floor:?}");
        assert!(floor.cpu_s > 0.0);
        assert!(floor.cpu_s_per_100k > 0.0);
    }
}
