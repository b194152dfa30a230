//! The gRPC server's connections, as HTTP/2 sees them.
//!
//! h2 copies a DATA frame's payload into its write buffer, next to the other frames
//! waiting to go out, unless the payload is at least 256 bytes and the connection
//! says it can write several buffers at once (`is_write_vectored`, true for a
//! `TcpStream`). Then the payload is kept aside to go out with a vectored write, and
//! no further frame is buffered until that write is done: each such reply costs a
//! write of its own. RouteCall's replies run from about 120 to 270 bytes (the agent's
//! context and the wait estimate), across that line, so under load replies that would
//! have gone out together in one write went out one write each.
//!
//! [`Batched`] is the connection with `is_write_vectored` false: h2 then copies
//! payloads below 1 KiB into its buffer like smaller ones and chains only larger
//! ones, so replies of a few hundred bytes share writes again. Reads and writes are
//! the stream's own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// See the module documentation.
#[derive(Debug)]
pub struct Batched<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Batched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: Connected> Connected for Batched<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn batched_connection_reads_and_writes_as_the_stream_and_says_it_is_not_vectored() {
        let (a, b) = tokio::io::duplex(1024);
        let (mut a, mut b) = (Batched(a), Batched(b));
        assert!(!a.is_write_vectored());
        a.write_all(b"route me").await.unwrap();
        a.flush().await.unwrap();
        let mut got = [0u8; 8];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"route me");
        a.shutdown().await.unwrap();
        assert_eq!(b.read(&mut got).await.unwrap(), 0);
    }
}
