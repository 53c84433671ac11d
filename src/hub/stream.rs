//! A connection's byte stream as its shard and its reader use it:
//! non-blocking writes (several frames at once), non-blocking reads, and
//! waiting for either to be possible. In the service it is the TCP stream;
//! unit tests use an in-memory pipe with a bounded buffer instead, so that
//! slow and stuck peers can be played exactly on tokio's paused clock
//! (socket readiness does not stop the paused clock from jumping ahead).

use std::io::{self, IoSlice};

use tokio::net::TcpStream;

/// A connection's byte stream, which a shard writes without awaiting.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// An in-memory pipe whose capacity tests set (tests only).
    #[cfg(test)]
    Pipe(pipe::End),
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Stream {
        Stream::Tcp(tcp)
    }
}

impl Stream {
    /// Writes what the socket takes now of `bufs`; `WouldBlock` when it takes nothing.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(tcp) => {
                // Straight to the socket (no readiness bookkeeping per write:
                // most writes succeed); only a full socket tells tokio, so
                // that `writable` waits for room.
                let socket = socket2::SockRef::from(tcp);
                let sent = match bufs {
                    [one] => socket.send(one),
                    _ => socket.send_vectored(bufs),
                };
                match sent {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tcp.try_io(tokio::io::Interest::WRITABLE, || Err(e))
                    }
                    sent => sent,
                }
            }
            #[cfg(test)]
            Stream::Pipe(end) => end.try_write_vectored(bufs),
        }
    }

    /// Reads what is there now into `buf`; `WouldBlock` when nothing is.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(tcp) => tcp.try_read(buf),
            #[cfg(test)]
            Stream::Pipe(end) => end.try_read(buf),
        }
    }

    /// Ready once the socket has something to read (or has failed); `cx`
    /// is woken then.
    pub fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self {
            Stream::Tcp(tcp) => tcp.poll_read_ready(cx),
            #[cfg(test)]
            Stream::Pipe(end) => end.poll_read_ready(cx).map(Ok),
        }
    }

    /// Waits until the socket can take more.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(tcp) => tcp.writable().await,
            #[cfg(test)]
            Stream::Pipe(end) => {
                end.writable().await;
                Ok(())
            }
        }
    }

    /// Ends both directions (what was written still goes out first).
    pub fn shutdown(&self) {
        match self {
            Stream::Tcp(tcp) => {
                let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
            }
            #[cfg(test)]
            Stream::Pipe(end) => end.shutdown(),
        }
    }
}

/// An in-memory duplex pipe for unit tests: each direction holds at most
/// `capacity` bytes, like a socket's kernel buffers.
#[cfg(test)]
pub mod pipe {
    use std::collections::VecDeque;
    use std::io::{self, IoSlice};
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    #[derive(Debug, Default)]
    struct Direction {
        bytes: Mutex<(VecDeque<u8>, bool)>,
        /// Room was made.
        room: Notify,
        /// The reader waiting for data or for the writer to close (one per
        /// end, as for a socket; see [`End::poll_read_ready`]).
        reader: Mutex<Option<std::task::Waker>>,
    }

    impl Direction {
        fn data_arrived(&self) {
            if let Some(waker) = lock(&self.reader).take() {
                waker.wake();
            }
        }
    }

    /// One end of a pipe.
    #[derive(Debug)]
    pub struct End {
        incoming: Arc<Direction>,
        outgoing: Arc<Direction>,
        capacity: usize,
        /// Writes that took bytes: the system calls a socket would have seen.
        pub writes: std::sync::atomic::AtomicUsize,
    }

    /// Two connected ends, each direction holding `capacity` bytes.
    pub fn pair(capacity: usize) -> (End, End) {
        let (a, b) = (
            Arc::new(Direction::default()),
            Arc::new(Direction::default()),
        );
        (
            End {
                incoming: Arc::clone(&a),
                outgoing: Arc::clone(&b),
                capacity,
                writes: Default::default(),
            },
            End {
                incoming: b,
                outgoing: a,
                capacity,
                writes: Default::default(),
            },
        )
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl Drop for End {
        /// The other end sees the end of the stream, after what is buffered.
        fn drop(&mut self) {
            lock(&self.outgoing.bytes).1 = true;
            self.outgoing.data_arrived();
        }
    }

    impl End {
        /// Buffers what fits of `bufs`; `WouldBlock` when nothing does.
        pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut state = lock(&self.outgoing.bytes);
            if state.1 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let room = self.capacity.saturating_sub(state.0.len());
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut written = 0;
            for buf in bufs {
                let take = buf.len().min(room - written);
                state.0.extend(&buf[..take]);
                written += take;
                if written == room {
                    break;
                }
            }
            drop(state);
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.outgoing.data_arrived();
            Ok(written)
        }

        /// Reads what the other end wrote; `WouldBlock` when nothing is there.
        pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
            let mut state = lock(&self.incoming.bytes);
            if state.0.is_empty() {
                return if state.1 {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(state.0.len());
            for (slot, byte) in buf.iter_mut().zip(state.0.drain(..n)) {
                *slot = byte;
            }
            drop(state);
            self.incoming.room.notify_waiters();
            Ok(n)
        }

        /// Waits until there is something to read.
        pub async fn readable(&self) {
            std::future::poll_fn(|cx| self.poll_read_ready(cx)).await;
        }

        /// Ready once there is something to read; `cx` is woken then.
        pub fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            // The waker is in place before the check: data arriving in
            // between wakes it.
            *lock(&self.incoming.reader) = Some(cx.waker().clone());
            let state = lock(&self.incoming.bytes);
            if !state.0.is_empty() || state.1 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        }

        /// Waits until the pipe can take more.
        pub async fn writable(&self) {
            loop {
                let notified = self.outgoing.room.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let ready = {
                    let state = lock(&self.outgoing.bytes);
                    state.0.len() < self.capacity || state.1
                };
                if ready {
                    return;
                }
                notified.await;
            }
        }

        /// Closes this end's writing side and stops taking what comes in.
        pub fn shutdown(&self) {
            lock(&self.outgoing.bytes).1 = true;
            self.outgoing.data_arrived();
            self.outgoing.room.notify_waiters();
            let mut incoming = lock(&self.incoming.bytes);
            incoming.1 = true;
            incoming.0.clear();
            drop(incoming);
            self.incoming.room.notify_waiters();
            // As a socket's: its reader sees the end of the stream.
            self.incoming.data_arrived();
        }

        /// Writes all of `bytes`, waiting for room.
        pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
            while !bytes.is_empty() {
                match self.try_write_vectored(&[IoSlice::new(bytes)]) {
                    Ok(n) => bytes = &bytes[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }

        /// Reads exactly `n` bytes; `None` if the other end closed first.
        pub async fn read_exact(&self, n: usize) -> Option<Vec<u8>> {
            let mut out = Vec::with_capacity(n);
            let mut buf = vec![0; n];
            while out.len() < n {
                match self.try_read(&mut buf[..n - out.len()]) {
                    Ok(0) => return None,
                    Ok(got) => out.extend_from_slice(&buf[..got]),
                    Err(_) => self.readable().await,
                }
            }
            Some(out)
        }
    }
}
