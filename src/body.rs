//! [`ResponseBody`]: the inner service's body, or one the layer wrote.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from [`SessionTimeout`](crate::SessionTimeout): the inner
    /// service's body untouched, or a body the layer wrote (the 440 page, the keep-alive
    /// `OK`). An enum inside, so it asks nothing of the inner body type, not even `Default`.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
        },
        Full {
            data: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Full { data } => write!(
                f,
                "ResponseBody::Full({} bytes)",
                data.as_ref().map_or(0, Bytes::len)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty, Full};

    use super::*;

    /// A body the layer wrote tells its exact length, and that it ends once its one frame is
    /// taken (servers use both: `Content-Length`, and no wait for a frame that never comes).
    #[tokio::test]
    async fn a_written_body_tells_its_length_and_its_end() {
        let mut body = ResponseBody::<Empty<Bytes>>::full(Bytes::from_static(b"Login Time-out"));
        assert_eq!(body.size_hint().exact(), Some(14));
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "Login Time-out");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));

        let empty = ResponseBody::<Empty<Bytes>>::full(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    /// The inner service's body is passed through as it is, its length and end included.
    #[test]
    fn the_inner_body_tells_its_own_length_and_end() {
        let full = ResponseBody::inner(Full::<Bytes>::new(Bytes::from_static(b"Hello")));
        assert_eq!(full.size_hint().exact(), Some(5));
        assert!(!full.is_end_stream());
        let empty = ResponseBody::inner(Empty::<Bytes>::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[test]
    fn debug_says_which_body_and_how_long() {
        let written = ResponseBody::<Empty<Bytes>>::full(Bytes::from_static(b"OK"));
        assert_eq!(format!("{written:?}"), "ResponseBody::Full(2 bytes)");
        let inner = ResponseBody::inner(Full::<Bytes>::new(Bytes::new()));
        assert_eq!(format!("{inner:?}"), "ResponseBody::Inner");
    }
}
