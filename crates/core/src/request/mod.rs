//! The transport-agnostic request and reply types, and the operation table.

mod operation;
mod reply;
mod table;

pub use operation::{Operation, Request, TokenCreate, TokenRef};
pub use reply::{
    mount_serving, mounts, HealthInfo, InitResult, KvSecret, KvWritten, Member, Mount, MountTable, Reply, SealStatus,
    SecretIdIssued, TokenCreated,
};
pub use table::{Need, OpClass, Recording, Spec};
