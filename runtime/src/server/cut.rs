//! Connections that can be cut when the shutdown grace period runs out.
//!
//! tonic runs each connection in a task of its own, so dropping the server future does not end
//! them. Every accepted stream is wrapped here; cancelling the token makes its next (or pending)
//! read or write fail, which ends the connection and whatever calls it still carries.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

pin_project! {
    pub struct CuttableStream {
        #[pin]
        stream: TcpStream,
        cut: Pin<Box<WaitForCancellationFutureOwned>>,
    }
}

impl CuttableStream {
    pub fn new(stream: TcpStream, cut: &CancellationToken) -> Self {
        Self { stream, cut: Box::pin(cut.clone().cancelled_owned()) }
    }
}

/// `Err` once the connection has been cut; otherwise registers for the cut and returns `Ok`.
fn check_cut(cut: &mut Pin<Box<WaitForCancellationFutureOwned>>, cx: &mut Context<'_>) -> io::Result<()> {
    match cut.as_mut().poll(cx) {
        Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server shutdown grace elapsed")),
        Poll::Pending => Ok(()),
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        check_cut(this.cut, cx)?;
        this.stream.poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        check_cut(this.cut, cx)?;
        this.stream.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        check_cut(this.cut, cx)?;
        this.stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

impl Connected for CuttableStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
