//! The `gatehouse` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::{self, AppState};
use crate::clock::Clock;
use crate::config::Config;

/// Gatehouse: API keys, Supabase-compatible sign-in, widget tokens and rate limits in one server.
#[derive(Parser, Debug)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    /// A TOML configuration file (settings in it are overridden by GATEHOUSE_* variables).
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (migrates storage first). Stops gracefully on SIGINT/SIGTERM.
    Serve {
        /// Development mode: sign-ups are confirmed at once (same as GATEHOUSE_DEV=true).
        #[arg(long)]
        dev: bool,
    },
    /// Apply pending storage migrations and exit.
    Migrate,
    /// Print the deployment's facts: storage engine, issuer, publishable key.
    Info,
    /// Manage users.
    User {
        /// What to do with users.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage the keys that sign access tokens.
    Jwt {
        /// What to do with signing keys.
        #[command(subcommand)]
        action: JwtAction,
    },
}

/// `gatehouse user …`.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Create a confirmed user with a password.
    Create {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// The password (at least the configured minimum length).
        #[arg(long)]
        password: String,
    },
}

/// `gatehouse jwt …`.
#[derive(Subcommand, Debug)]
pub enum JwtAction {
    /// Add a new ES256 signing key; older keys stay in the JWKS until their tokens have expired.
    /// Running servers pick the new key up within a minute.
    Rotate,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    crate::telemetry::init(&config.log, &config.log_format);
    match cli.command {
        Command::Serve { dev } => {
            if dev {
                config.dev = true;
                config.autoconfirm = true;
            }
            serve(config).await
        }
        Command::Migrate => {
            let store = crate::store::Store::connect(&config.database_url).await?;
            store.migrate().await?;
            println!("migrations applied ({:?})", store.engine());
            Ok(())
        }
        Command::Info => {
            let state = AppState::build(config, Clock::System).await?;
            println!("storage:          {:?}", state.store.engine());
            println!("issuer:           {}", state.config.issuer());
            println!("listen:           {}", state.config.listen);
            println!("publishable key:  {}", state.publishable_key.expose());
            Ok(())
        }
        Command::User {
            action: UserAction::Create { email, password },
        } => {
            let state = AppState::build(config, Clock::System).await?;
            let user = state
                .accounts
                .create_confirmed_user(&email, password)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the user: {e}"))?;
            println!("created user {} <{}>", user.id, user.email);
            Ok(())
        }
        Command::Jwt {
            action: JwtAction::Rotate,
        } => {
            let store = crate::store::Store::connect(&config.database_url).await?;
            store.migrate().await?;
            let key = crate::auth::jwt::generate_key(Clock::System.now_ms())?;
            store
                .add_jwt_key(&key)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("new signing key {} is active", key.kid);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = AppState::build(config, Clock::System).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, storage = ?state.store.engine(), "gatehouse listening");
    // The publishable key is public by design (like Supabase's anon key): printing it lets
    // a developer point a client at a fresh server.
    tracing::info!(publishable_key = %state.publishable_key.expose(), "clients send this in the apikey header");
    tokio::spawn(reload_keys(state.clone()));
    app::run(state, listener, app::shutdown_signal()).await
}

/// Picks up signing keys rotated by `gatehouse jwt rotate` (possibly on another host).
async fn reload_keys(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = state.clock.now_ms();
        match state
            .store
            .jwt_keys(now, state.config.jwt_expiry_seconds * 1000)
            .await
        {
            Ok(keys) => {
                if let Err(e) = state.accounts.jwt.reload(&keys) {
                    tracing::warn!(error = %e, "reloading signing keys failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading signing keys failed"),
        }
    }
}
