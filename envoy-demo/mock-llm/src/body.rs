//! Response body: either one buffer (sent with content-length) or a channel of
//! frames fed by a streaming task. A hand-written enum avoids boxing and the
//! futures crates on the hot path.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Error that aborts a streaming response (`x-mock-reset-after-chunks`): hyper
/// then closes the HTTP/1 connection without the terminating chunk, or resets
/// the HTTP/2 stream.
#[derive(Debug)]
pub struct StreamAbort;

impl std::fmt::Display for StreamAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock-llm: stream aborted on request (x-mock-reset-after-chunks)")
    }
}

impl std::error::Error for StreamAbort {}

pub type FrameResult = Result<Bytes, StreamAbort>;

pub enum MockBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<FrameResult>),
}

impl MockBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(b.into()))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = StreamAbort;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamAbort>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Stream(_) => SizeHint::default(),
        }
    }
}
