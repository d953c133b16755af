//! Watch streams: the `Core` side, re-authorizing every event for its own path.

use super::*;
use crate::Core;

impl Core {
    /// Streams the changes under `prefixes` after `after` (`None`: from now) to a watcher whose
    /// opening request ([`Operation::Watch`], one per prefix) was authorized and audited.
    /// Every event is re-authorized for its own path on the current state; the stream ends on
    /// an `AccessRevoked` event, on an error (the node sealed), or when the receiver is dropped.
    pub fn watch(
        &self,
        token: Option<Zeroizing<String>>,
        prefixes: Vec<String>,
        after: Option<u64>,
    ) -> mpsc::Receiver<Result<WatchEvent>> {
        let (tx, rx) = mpsc::channel(256);
        let core = self.clone();
        tokio::spawn(async move {
            if let Err(e) = core.serve_watch(&tx, token.as_ref(), &prefixes, after).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn serve_watch(
        &self,
        tx: &mpsc::Sender<Result<WatchEvent>>,
        token: Option<&Zeroizing<String>>,
        prefixes: &[String],
        after: Option<u64>,
    ) -> Result<()> {
        let closed = || Error::Internal("the watcher went away".into());
        let send = |event: WatchEvent| async { tx.send(Ok(event)).await.map_err(|_| closed()) };
        let revoked =
            |seq: u64, prefix: String| WatchEvent { path: prefix, ..WatchEvent::at(seq, WatchKind::AccessRevoked) };
        let mut wake = self.feed.wake.subscribe();
        let mut cursor = after.unwrap_or_else(|| self.feed.latest());
        // The token is resolved once, and again only when a policy changes or a token is
        // removed (both are changes in the feed), not for every event.
        let mut caller = match self.watcher(token, prefixes)? {
            Ok(caller) => caller,
            Err(prefix) => return send(revoked(cursor, prefix)).await,
        };
        let (_, floor, _) = self.feed.after(cursor, 0);
        if cursor < floor {
            send(WatchEvent::at(floor, WatchKind::Reset)).await?;
            cursor = floor;
        }
        // The first event says where the stream stands, so a client can resume from it even if
        // nothing changes.
        send(WatchEvent::at(cursor, WatchKind::Progress)).await?;
        let mut last_sent = Instant::now();
        loop {
            let (page, floor, latest) = self.feed.after(cursor, PAGE);
            if cursor < floor {
                // Fell behind the ring while sending: what was dropped is unknown.
                send(WatchEvent::at(floor, WatchKind::Reset)).await?;
                cursor = floor;
                last_sent = Instant::now();
                continue;
            }
            let full = page.len() == PAGE;
            for (seq, change) in page {
                cursor = seq;
                let event = match change {
                    Change::Reset => Some(WatchEvent::at(seq, WatchKind::Reset)),
                    Change::Access => match self.watcher(token, prefixes)? {
                        Ok(now) => {
                            caller = now;
                            None
                        }
                        Err(prefix) => Some(revoked(seq, prefix)),
                    },
                    Change::Secret { .. } if caller.info.expired_at(crate::now_ms()) => {
                        Some(revoked(seq, String::new()))
                    }
                    Change::Secret { path, kind, version } => {
                        self.secret_event(&caller, prefixes, seq, path, kind, version)?
                    }
                };
                if let Some(event) = event {
                    let ends = event.kind == WatchKind::AccessRevoked;
                    send(event).await?;
                    if ends {
                        return Ok(());
                    }
                    last_sent = Instant::now();
                }
            }
            if full {
                continue;
            }
            cursor = cursor.max(latest);
            let quiet_for = last_sent.elapsed();
            if quiet_for >= PROGRESS_INTERVAL {
                send(WatchEvent::at(cursor, WatchKind::Progress)).await?;
                last_sent = Instant::now();
                continue;
            }
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return Err(closed()) },
                _ = tx.closed() => return Ok(()),
                _ = tokio::time::sleep(PROGRESS_INTERVAL - quiet_for) => {}
            }
        }
    }

    /// The watcher's caller now, if its token is valid and may still read every prefix;
    /// otherwise the prefix it lost (empty: the token itself is gone).
    fn watcher(&self, token: Option<&Zeroizing<String>>, prefixes: &[String]) -> Result<Result<Caller, String>> {
        let keyring = self.keyring()?;
        let Some((_, caller)) = self.stored_caller(&keyring, token.map(|t| &**t)) else {
            return Ok(Err(String::new()));
        };
        for prefix in prefixes {
            let op = Operation::Watch { prefix: prefix.clone() };
            if self.authorize_op(&caller, &op, &mut AuditContext::default()).is_err() {
                return Ok(Err(prefix.clone()));
            }
        }
        Ok(Ok(caller))
    }

    /// The event for a change to `path`, if the watcher watches it and may read it (the
    /// caller's policies as of the last access change, on the compiled policy set).
    fn secret_event(
        &self,
        caller: &Caller,
        prefixes: &[String],
        seq: u64,
        path: String,
        kind: WatchKind,
        version: u64,
    ) -> Result<Option<WatchEvent>> {
        if !prefixes.iter().any(|p| path.starts_with(p.as_str())) {
            return Ok(None);
        }
        let read = Operation::KvGet { path: path.clone(), version: None };
        if self.authorize_op(caller, &read, &mut AuditContext::default()).is_err() {
            return Ok(None);
        }
        // The state now, which may be past this change: `current_version` is a hint, the event
        // itself is what must not be missed.
        let meta = self.read_meta(&*self.keyring()?, &path)?.map(|(m, _)| m);
        let current_version = meta.as_ref().map_or(0, |m| m.current_version);
        let current_gone = meta.as_ref().is_none_or(|m| {
            m.versions.get(&m.current_version).is_none_or(|v| v.deleted_at(crate::now_ms()) || v.destroyed)
        });
        let kind = if kind == WatchKind::Metadata && current_gone { WatchKind::Deleted } else { kind };
        debug!(seq, path = %path, ?kind, "watch event");
        Ok(Some(WatchEvent { seq, kind, path, version, current_version }))
    }
}
