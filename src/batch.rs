//! Gathering queued work into batches: the group commits (credit spends, chat exchanges) and
//! the Redis limiter's script calls take what is waiting in one go.

/// The next batch of a group commit: waits for one item, takes what else is queued, then
/// yields once so the requests already runnable on this worker can add theirs before the
/// batch is written (up to `max` in all). The yield costs nothing when nothing else is
/// runnable; under load it lets a batch take the requests in progress instead of leaving
/// them to wait a whole commit (and its `fsync`) for the next one. 0 when the channel closed.
pub async fn next_batch<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    pending: &mut Vec<T>,
    max: usize,
) -> usize {
    if rx.recv_many(pending, max).await == 0 {
        return 0;
    }
    if pending.len() < max {
        tokio::task::yield_now().await;
        while pending.len() < max {
            match rx.try_recv() {
                Ok(item) => pending.push(item),
                Err(_) => break,
            }
        }
    }
    pending.len()
}

#[cfg(test)]
mod tests {
    /// A task that was runnable when the batch began adds its item to that batch, not to
    /// the next one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_takes_what_runnable_tasks_add() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        assert!(tx.send(1).await.is_ok());
        let late = tx.clone();
        tokio::spawn(async move { assert!(late.send(2).await.is_ok()) });
        let mut pending = Vec::new();
        assert_eq!(super::next_batch(&mut rx, &mut pending, 8).await, 2);
        assert_eq!(pending, vec![1, 2]);
        // Never more than `max`.
        for i in 0..5 {
            assert!(tx.send(i).await.is_ok());
        }
        let mut pending = Vec::new();
        assert_eq!(super::next_batch(&mut rx, &mut pending, 3).await, 3);
        drop(tx);
        let mut rest = Vec::new();
        assert_eq!(super::next_batch(&mut rx, &mut rest, 8).await, 2);
        assert_eq!(super::next_batch(&mut rx, &mut rest, 8).await, 0, "closed");
    }
}
