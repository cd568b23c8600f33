//! Close the host's SSH session once its work is done.

use futures::future::LocalBoxFuture;

use super::Phase;
use crate::engine::error::RunError;
use crate::engine::host::Host;

pub struct Disconnect;

impl<'a> Phase<Host<'a>> for Disconnect {
    fn title(&self) -> &'static str {
        "disconnect"
    }

    fn has_work(&self, h: &Host<'a>) -> bool {
        h.session.is_some()
    }

    fn run<'h>(&'h self, h: &'h mut Host<'a>) -> LocalBoxFuture<'h, Result<(), RunError>> {
        Box::pin(async move {
            if let Some(s) = h.session.take() {
                s.close().await;
            }
            Ok(())
        })
    }
}
