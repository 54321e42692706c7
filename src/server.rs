//! The serve loop: the HTTP listeners, the background workers, and an orderly shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::AppState;
use crate::config::Config;

/// Serves until `shutdown` resolves, then lets in-flight requests finish; binds
/// `metrics_listen` first when it is set.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = bind_metrics(&state.config).await?;
    serve(state, listener, metrics, shutdown).await
}

/// The listener of `metrics_listen`, when it is set.
pub async fn bind_metrics(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    match config.metrics_listen {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics_listen): {e}")),
        None => Ok(None),
    }
}

/// [`run`] with the `metrics_listen` listener already bound (`None`: `/metrics` is on the
/// main listener). Both stop when `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures_util::FutureExt;
    let shutdown = shutdown.shared();
    let metrics_server = metrics_listener.map(|l| {
        let app = crate::http::metrics::own_router(state.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await })
    });
    let app = crate::http::router(state.clone());
    // Each batch holds a row per key used since the last one: with many active keys a short
    // interval costs a core (see `write_behind_seconds`).
    let every = Duration::from_secs(state.config.write_behind_seconds);
    let writer = tokio::spawn(state.keys.clone().write_behind(every));
    let subscriber = tokio::spawn(state.runtime.bus.clone().subscribe());
    let usage = tokio::spawn(state.chat.usage.clone().write_behind(every));
    let webhooks =
        crate::webhooks::worker::spawn(state.webhooks.clone(), state.edge.metrics.clone());
    let (stop_mail, stop_rx) = tokio::sync::watch::channel(false);
    let mail = tokio::spawn(crate::mail::worker(
        state.email.clone(),
        state.runtime.store.clone(),
        state.edge.clock.clone(),
        stop_rx,
    ));
    // No Nagle delay on answers: a streamed chat writes one small event per token, which
    // would otherwise wait for the client's (delayed) acknowledgement of the one before.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    if let Some(server) = metrics_server {
        if served.is_err() {
            server.abort();
        }
        match server.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Err(e) if e.is_panic() => tracing::warn!("the metrics listener panicked"),
            _ => {}
        }
    }
    served?;
    writer.abort();
    subscriber.abort();
    usage.abort();
    webhooks.stop().await;
    // A mail being handed to SMTP is finished rather than cut off (it would be sent again
    // by whichever instance takes the lease over).
    let _ = stop_mail.send(true);
    if tokio::time::timeout(Duration::from_secs(35), mail)
        .await
        .is_err()
    {
        tracing::warn!("the mail worker did not stop in time");
    }
    if let Err(e) = state.chat.usage.flush().await {
        tracing::warn!(error = %e, "could not write the usage counters at shutdown");
    }
    // Last-used times still in memory are written before storage closes.
    if let Err(e) = state.keys.flush_last_used().await {
        tracing::warn!(error = %e, "could not write the last-used times at shutdown");
    }
    state.runtime.store.close().await;
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit, and returns it. Every
/// streamed chat holds two descriptors (the client's connection and the model server's), and
/// the usual soft limit (1,024 under systemd and most shells) would refuse connections after
/// about 500 streams where the hard limit (often 524,288) allows far more; Go servers do the
/// same at start.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            None
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
