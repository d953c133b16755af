//! Backups as the `Core` takes and restores them: a save streamed from one RocksDB snapshot, a restore checked whole and replicated through Raft.

use super::*;
use crate::{Core, Reply};

impl Core {
    /// `SnapshotSave`, after the read barrier and authorization.
    pub(crate) fn snapshot_save(&self, keyring: Arc<Keyring>) -> Result<Reply> {
        let init = self.init_record()?.ok_or(Error::NotInitialized)?;
        let meta = BackupMeta {
            format: backup::FORMAT,
            cluster_id: init.cluster_id(),
            keyring_term: keyring.active_term(),
            index: 0,
            raft_term: 0,
            created_ms: now_ms(),
            node: self.node.id(),
            version: env!("CARGO_PKG_VERSION").into(),
            records: 0,
            state_bytes: 0,
            state_sha256: String::new(),
        };
        let (tx, rx) = mpsc::channel(4);
        let reader = self.node.reader().clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(DOWNLOAD_PIECE) };
            let seal = |sums: &[u8]| keyring.encrypt(SUMS_AAD, sums).map_err(|e| e.to_string());
            match backup::export(&reader, meta, seal, &mut out).and_then(|m| {
                std::io::Write::flush(&mut out).map_err(arca_storage::Error::BackupIo)?;
                Ok(m)
            }) {
                Ok(meta) => info!(index = meta.index, records = meta.records, "backup streamed"),
                Err(e) => {
                    warn!(error = %e, "backup cut short");
                    let _ = tx.blocking_send(Err(format!("the backup could not be completed: {e}")));
                }
            }
        });
        Ok(Reply::Snapshot(Download(rx)))
    }

    /// `SnapshotRestore`, after authorization. `request_id` goes into the record that the
    /// restored audit trail gets.
    pub(crate) async fn snapshot_restore(
        &self,
        keyring: &Keyring,
        caller: &Caller,
        mut upload: Upload,
        force: bool,
        request_id: &str,
    ) -> Result<Reply> {
        let Ok(_one_at_a_time) = RESTORING.try_lock() else {
            return Err(Error::FailedPrecondition("another restore is running on this node; wait for it".into()));
        };
        let dir = self.node.scratch_dir().map_err(|e| internal("cannot create the scratch directory", &e))?;
        let scratch = ScratchFile(dir.join(format!("restore-{request_id}.tar.gz")));
        let mut file =
            tokio::fs::File::create(&scratch.0).await.map_err(|e| internal("cannot store the uploaded backup", &e))?;
        let mut received = 0u64;
        while let Some(piece) = upload.0.next().await {
            let piece = piece.map_err(|e| Error::InvalidArgument(format!("the backup upload failed: {e}")))?;
            received += piece.len() as u64;
            if received > MAX_RESTORE_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "the backup is over the {MAX_RESTORE_BYTES}-byte limit of a restore; nothing was changed"
                )));
            }
            file.write_all(&piece).await.map_err(|e| internal("cannot store the uploaded backup", &e))?;
        }
        file.sync_all().await.map_err(|e| internal("cannot store the uploaded backup", &e))?;
        drop(file);

        let path = scratch.0.clone();
        // The init record is found in the same pass that checks the file.
        let (inspected, init_raw) =
            tokio::task::spawn_blocking(move || backup::inspect_finding(&path, Some((Cf::Sys, INIT_KEY))))
                .await
                .map_err(|e| internal("checking the backup", &e))?
                .map_err(refused_backup)?;
        let meta = inspected.meta;
        if meta.state_bytes > MAX_RESTORE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the backup holds {} bytes of records, over the {MAX_RESTORE_BYTES}-byte limit of a restore; nothing \
                 was changed",
                meta.state_bytes
            )));
        }
        // Without an init record the cluster would be left uninitialized, open to anyone's init.
        let theirs = init_raw
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "the backup has no init record (sys/core/init): it is not a vault's backup".into(),
                )
            })
            .and_then(|raw| InitRecord::parse(&raw))?;
        let init = self.init_record()?.ok_or(Error::NotInitialized)?;
        let ours = init.cluster_id();
        if !force {
            if meta.cluster_id != ours {
                return Err(Error::FailedPrecondition(format!(
                    "the backup is of cluster {}, this is cluster {ours}: restoring it replaces this cluster's data and \
                     keys, after which every node must be unsealed with the backup cluster's shares. To do that, \
                     restore with --force (Vault: sys/storage/raft/snapshot-force)",
                    meta.cluster_id
                )));
            }
            let sealed_by_us = keyring
                .decrypt(SUMS_AAD, &inspected.sealed)
                .is_ok_and(|sums| sums.as_slice() == inspected.sums.as_slice());
            if !sealed_by_us {
                return Err(Error::FailedPrecondition(
                    "the backup names this cluster, but its checksums were not sealed by this cluster's keyring: it \
                     was not made by this cluster or was altered. Restore it with --force only if you trust it"
                        .into(),
                ));
            }
            let root = match &*self.sealer().seal.lock().expect("seal lock") {
                Seal::Unsealed { root, .. } => root.clone(),
                Seal::Sealed(_) => return Err(Error::Sealed),
            };
            if Keyring::unseal(&root, &theirs.sealed_keyring).is_err() {
                return Err(Error::FailedPrecondition(
                    "the backup was taken before this cluster was rekeyed: its keyring opens only with the unseal \
                     shares from before the rekey, so restoring it seals every node until those are given. Restore \
                     it with --force only if you hold those shares"
                        .into(),
                ));
            }
        }
        let sha256: [u8; 32] = hex::decode(&meta.state_sha256)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::InvalidArgument("the backup's meta.json has a malformed state_sha256".into()))?;

        let restore_id = crate::audit::request_id();
        info!(
            %restore_id, %request_id, accessor = %caller.info.accessor, backup_index = meta.index,
            records = meta.records, force, "restoring a backup"
        );
        self.restore_step(Command::RestoreBegin { restore_id: restore_id.clone() }).await?;
        let replicated = self.replicate_restore(&scratch.0, &restore_id, &meta, sha256, request_id, force, ours).await;
        if replicated.is_err() {
            // Drop what was staged (it would otherwise sit in every node's state and snapshots).
            let _ = self.node.write(Command::RestoreAbort { restore_id }).await;
        }
        replicated?;
        let sealed = self.keyring().is_err();
        warn!(
            backup_index = meta.index,
            records = meta.records,
            sealed,
            "backup restored: the vault's data was replaced"
        );
        Ok(Reply::Restored(Restored { meta, sealed }))
    }

    /// Stages the verified backup's records through Raft and commits the swap.
    #[allow(clippy::too_many_arguments)]
    async fn replicate_restore(
        &self,
        file: &std::path::Path,
        restore_id: &str,
        meta: &BackupMeta,
        sha256: [u8; 32],
        request_id: &str,
        force: bool,
        ours: String,
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::channel(2);
        let path = file.to_path_buf();
        let reading = tokio::task::spawn_blocking(move || {
            backup::read_records(&path, CHUNK_BYTES, |chunk| {
                tx.blocking_send(chunk).map_err(|_| arca_storage::Error::Backup("the restore was abandoned".into()))
            })
        });
        while let Some(records) = rx.recv().await {
            self.restore_step(Command::RestoreChunk { restore_id: restore_id.to_string(), records }).await?;
        }
        reading.await.map_err(|e| internal("reading the backup", &e))?.map_err(refused_backup)?;

        let head = arca_raft::audit_log::head(self.node.reader());
        let record = AuditRecord {
            time_ms: now_ms(),
            request_id: request_id.to_string(),
            node: self.node.id(),
            operation: "SnapshotRestore".into(),
            path: "sys/storage/raft/snapshot".into(),
            // Who it was stays out (this record is not encrypted): the request id leads to the
            // serving node's log, which names the caller.
            caller: AuditCaller::default(),
            decision: "allowed".into(),
            capability: "update".into(),
            outcome: "ok".into(),
            details: [
                ("backup_cluster_id", meta.cluster_id.clone()),
                ("backup_keyring_term", meta.keyring_term.to_string()),
                ("backup_index", meta.index.to_string()),
                ("backup_created_ms", meta.created_ms.to_string()),
                ("backup_records", meta.records.to_string()),
                ("backup_state_sha256", meta.state_sha256.clone()),
                ("replaced_cluster_id", ours),
                ("replaced_audit_head_seq", head.seq.to_string()),
                ("replaced_audit_head_hash", hex::encode(head.hash)),
                ("forced", force.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        };
        let audit_record =
            [SYSTEM_RECORD_PREFIX, &serde_json::to_vec(&record).map_err(|e| internal("audit", &e))?].concat();
        let commit =
            Command::RestoreCommit { restore_id: restore_id.to_string(), records: meta.records, sha256, audit_record };
        self.restore_step(commit).await
    }

    async fn restore_step(&self, command: Command) -> Result<()> {
        match self.node.write(command).await?.result {
            CommandResult::Restored { .. } => Ok(()),
            CommandResult::RestoreRefused { reason } => {
                Err(Error::FailedPrecondition(format!("the restore did not take place: {reason}")))
            }
            other => Err(Error::Internal(format!("unexpected result of a restore step: {other:?}"))),
        }
    }
}
