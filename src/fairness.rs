//! Which NAS client a piece of work is done for, so queues that every request shares (the
//! password-hashing threads) can serve clients in turn: one client's backlog then delays another
//! client's work by one job, not by the whole backlog. The server sets it around each decision;
//! work outside any request (the portal, the CLI) runs as client 0.

tokio::task_local! {
    static CLIENT: u64;
}

/// Runs `work` on behalf of `client`.
pub async fn on_behalf_of<F: std::future::Future>(client: u64, work: F) -> F::Output {
    CLIENT.scope(client, work).await
}

/// The client the current task works for (0 outside any request).
pub fn current_client() -> u64 {
    CLIENT.try_with(|client| *client).unwrap_or(0)
}
