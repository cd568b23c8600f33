//! Open the host's SSH session (its key checked against known_hosts).

use futures::future::LocalBoxFuture;
use std::time::Instant;

use super::Phase;
use crate::engine::error::RunError;
use crate::engine::host::Host;
use crate::ssh::Session;

pub struct Connect;

impl<'a> Phase<Host<'a>> for Connect {
    fn title(&self) -> &'static str {
        "connect"
    }

    fn run<'h>(&'h self, h: &'h mut Host<'a>) -> LocalBoxFuture<'h, Result<(), RunError>> {
        Box::pin(async move {
            let t = Instant::now();
            let session = Session::connect(&h.target, h.cx.ssh)
                .await
                .map_err(|e| RunError::Connect { host: h.name.clone(), cause: e.to_string() })?;
            h.cx.reporter.connected(&h.name, session.host_key_fingerprint(), session.first_contact(), t.elapsed());
            h.session = Some(session);
            Ok(())
        })
    }

    fn clean_up<'h>(&'h self, h: &'h mut Host<'a>) -> LocalBoxFuture<'h, ()> {
        Box::pin(async move {
            if let Some(s) = h.session.take() {
                s.close().await;
            }
        })
    }
}
