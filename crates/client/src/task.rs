//! [`Background`]: a task that lives as long as the object that owns it.

use std::sync::Mutex;

use tokio::task::JoinHandle;

/// The slot of a background task (token renewal, a cache's watch) that holds only a weak
/// reference to its owner; dropping the owner aborts the task at once instead of leaving it
/// to notice on its next wake-up.
#[derive(Default)]
pub(crate) struct Background(Mutex<Option<JoinHandle<()>>>);

impl Background {
    pub fn set(&self, task: JoinHandle<()>) {
        if let Some(old) = self.0.lock().expect("task lock").replace(task) {
            old.abort();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.0.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}
