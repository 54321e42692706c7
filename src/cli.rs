//! The `gatehouse` command line.

mod check;
mod import;
mod list;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::app::AppState;
use crate::clock::Clock;
use crate::config::Config;

/// Gatehouse: Supabase-compatible sign-in, organizations and API keys in one server.
#[derive(Parser, Debug)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    /// A TOML configuration file (settings in it are overridden by GATEHOUSE_* variables).
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// Create the SQLite database if it does not exist. Without it, every command but
    /// `serve` refuses to run where there is no database, rather than start an empty one.
    #[arg(long, global = true)]
    pub create: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (migrates storage first). Stops gracefully on SIGINT/SIGTERM.
    Serve {
        /// Development mode (same as GATEHOUSE_DEV=true): sign-ups are confirmed at once,
        /// private webhook targets are allowed, localhost, 127.0.0.1 and [::1] are one origin.
        #[arg(long)]
        dev: bool,
    },
    /// Apply pending storage migrations and exit.
    Migrate,
    /// Print the deployment's facts: the database, issuer, dashboard, publishable key.
    Info,
    /// Manage users.
    User {
        /// What to do with users.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage organizations.
    Org {
        /// What to do with organizations.
        #[command(subcommand)]
        action: OrgAction,
    },
    /// Manage organization API keys.
    Key {
        /// What to do with API keys.
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Widget tokens for embedding the chat widget.
    Widget {
        /// What to do with widgets.
        #[command(subcommand)]
        action: WidgetAction,
    },
    /// Manage the keys that sign access tokens.
    Jwt {
        /// What to do with signing keys.
        #[command(subcommand)]
        action: JwtAction,
    },
    /// Mint a service key for the admin API (`/auth/v1/admin`, `supabase.auth.admin`): a
    /// `service_role` JWT signed with the deployment's signing key, printed once. Keep it
    /// secret: it manages every user.
    ServiceKey {
        /// Days until it expires.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
        days: i64,
    },
    /// Copy the SQLite database to a new file while the server keeps running (a consistent
    /// snapshot: every write acknowledged before the copy began is in it).
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        to: PathBuf,
    },
    /// Replace the SQLite database with a backup. Refuses while `gatehouse serve` has the
    /// database open; an existing database is replaced only with --force, and is then kept
    /// beside it as `{file}-before-restore-{unix ms}`.
    Restore {
        /// The backup file (made by `gatehouse backup`).
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing database (it is kept beside the new one).
        #[arg(long)]
        force: bool,
    },
    /// Bring users in from another auth server.
    Import {
        /// Where from.
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Check the configuration.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `gatehouse import …`.
#[derive(Subcommand, Debug)]
pub enum ImportSource {
    /// Read `auth.users` and `auth.identities` of a Supabase (GoTrue) PostgreSQL database and
    /// create the users here with their ids, emails, confirmation, metadata and password
    /// hashes. Users already imported are skipped, so it can run again; prints a summary.
    Supabase {
        /// The Supabase database, `postgres://…` (its direct connection string). Prefer the
        /// SUPABASE_DB_URL variable: a password on the command line shows in the process list.
        #[arg(long, env = "SUPABASE_DB_URL", hide_env_values = true)]
        from: String,
        /// Read and report what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `gatehouse config …`.
#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Load and validate the configuration as `serve` would (secrets from files included),
    /// print the effective settings with every secret masked, and exit non-zero if it is
    /// invalid. Touches no database unless asked.
    Check {
        /// Also connect to the database, Redis and SMTP server it names and report each;
        /// exit non-zero if one fails.
        #[arg(long)]
        connect: bool,
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
        /// The password (at least the configured minimum length). It shows in the process
        /// list and the shell's history: prefer --password-stdin.
        #[arg(long, required_unless_present = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
    },
    /// List users, in the order they signed up.
    List(list::ListArgs),
}

/// `gatehouse org …`.
#[derive(Subcommand, Debug)]
pub enum OrgAction {
    /// Create an organization owned by an existing user; prints only its id.
    Create {
        /// The organization's name.
        #[arg(long)]
        name: String,
        /// The email of the user who becomes its owner.
        #[arg(long)]
        owner_email: String,
    },
    /// Invite an address into an organization (with or without an account); prints only the
    /// invitation's id. The mail is queued; a running server on the same storage sends it.
    Invite {
        /// The organization id (`org_…`).
        #[arg(long)]
        org: String,
        /// The address to invite.
        #[arg(long)]
        email: String,
        /// A built-in or custom role of the organization.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// List every organization, with its member and key counts.
    List(list::ListArgs),
}

/// `gatehouse key …`.
#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Create an API key; prints only the key, which is shown this once.
    Create {
        /// The organization id (`org_…`).
        #[arg(long)]
        org: String,
        /// The key's name (1-50 characters).
        #[arg(long)]
        name: String,
        /// Comma-separated permissions, e.g. `chat:write,threads:read`.
        #[arg(long, default_value = "", value_delimiter = ',')]
        scopes: Vec<String>,
        /// `live` or `test`.
        #[arg(long, default_value = "live")]
        environment: String,
        /// Days until expiry; 0 for never.
        #[arg(long, default_value_t = 365)]
        expires_in_days: i64,
        /// Credits: uses left (absent: unlimited).
        #[arg(long)]
        credits: Option<i64>,
        /// Sets the credits back to `--refill-amount` `daily` or `monthly` (needs `--credits`).
        #[arg(long, requires_all = ["credits", "refill_amount"])]
        refill: Option<String>,
        /// The balance each refill sets.
        #[arg(long, requires = "refill")]
        refill_amount: Option<i64>,
        /// The day of the month (1-31) of a monthly refill; default 1.
        #[arg(long, requires = "refill")]
        refill_day: Option<i64>,
    },
    /// Revoke an API key at once.
    Revoke {
        /// The organization id (`org_…`).
        #[arg(long)]
        org: String,
        /// The key id (`key_…`).
        #[arg(long)]
        id: String,
    },
    /// List an organization's API keys (never the keys themselves), in the order they were
    /// created.
    List {
        /// The organization id (`org_…`).
        #[arg(long)]
        org: String,
        /// Paging and format.
        #[command(flatten)]
        page: list::ListArgs,
    },
}

/// `gatehouse widget …`.
#[derive(Subcommand, Debug)]
pub enum WidgetAction {
    /// Mint a widget token for `data-key`; prints only the token. Tokens are not stored:
    /// rotating the widget's secret revokes them all.
    Token {
        /// The organization id (`org_…`).
        #[arg(long)]
        org: String,
        /// The widget id (`wgt_…`).
        #[arg(long)]
        widget: String,
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
    // Only the server exports spans: a one-shot command has no request to trace.
    let serving = matches!(cli.command, Command::Serve { .. });
    let otlp = config.otlp_endpoint.as_deref().filter(|_| serving);
    let telemetry = crate::telemetry::init(&config.log, &config.log_format, otlp)?;
    // `serve` creates its database on first start (the README's first run); any other
    // command run in the wrong folder would silently start an empty deployment instead.
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Config { .. } | Command::Restore { .. }
    ) && !cli.create
    {
        refuse_without_database(&config.database_url)?;
    }
    match cli.command {
        Command::Serve { dev } => {
            if dev {
                config.dev = true;
                config.autoconfirm = true;
            }
            let served = serve(config).await;
            // The last spans go out after the server stopped (this blocks: off the runtime).
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            served
        }
        Command::Migrate => {
            let store = crate::store::Store::open(&config).await?;
            println!("migrations applied ({:?})", store.engine());
            Ok(())
        }
        Command::Info => {
            let state = AppState::build(config, Clock::System).await?;
            println!("storage:          {:?}", state.runtime.store.engine());
            println!(
                "database:         {}",
                crate::store::describe(&state.config.database_url)
            );
            println!("issuer:           {}", state.config.issuer());
            println!("listen:           {}", state.config.listen);
            println!("dashboard:        {}/dashboard", state.config.public_base());
            println!(
                "publishable key:  {}",
                state.edge.publishable_key.expose_secret()
            );
            Ok(())
        }
        Command::User {
            action:
                UserAction::Create {
                    email,
                    password,
                    password_stdin,
                },
        } => {
            let password = match password {
                Some(p) if !password_stdin => p,
                _ => read_password()?,
            };
            let state = AppState::build(config, Clock::System).await?;
            let user = state
                .accounts
                .create_confirmed_user(&email, password)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the user: {e}"))?;
            println!("created user {} <{}>", user.id, user.email);
            Ok(())
        }
        Command::User {
            action: UserAction::List(page),
        } => {
            let state = AppState::build(config, Clock::System).await?;
            list::users(&state, page).await
        }
        Command::Backup { to } => {
            let store = crate::store::Store::connect(&config.database_url).await?;
            store.backup_into(&to).await?;
            store.close().await;
            let facts = crate::store::backup::inspect(&to).await?;
            println!(
                "backed up {} to {} ({} users, {} organizations, schema version {})",
                crate::store::describe(&config.database_url),
                to.display(),
                facts.users,
                facts.orgs,
                facts.schema_version
            );
            Ok(())
        }
        Command::Restore { from, force } => restore(&config, &from, force).await,
        Command::Import {
            source: ImportSource::Supabase { from, dry_run },
        } => {
            let store = crate::store::Store::connect(&config.database_url).await?;
            store.migrate().await?;
            let summary = import::supabase(&store, &from, dry_run, Clock::System.now_ms()).await?;
            import::print(&summary, dry_run);
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check { connect },
        } => check::run(&config, connect).await,
        Command::Org { action } => org_command(config, action).await,
        Command::Key { action } => key_command(config, action).await,
        Command::Widget {
            action: WidgetAction::Token { org, widget },
        } => {
            let org = crate::ids::OrgId::parse(&org)?;
            let widget = crate::ids::WidgetId::parse(&widget)?;
            let state = AppState::build(config, Clock::System).await?;
            let (token, _) = state.widgets.mint_token(&org, &widget).await?;
            println!("{token}");
            Ok(())
        }
        Command::ServiceKey { days } => {
            let state = AppState::build(config, Clock::System).await?;
            let now = Clock::System.now_secs();
            let key = state.accounts.jwt.sign_service(now, days * 86_400)?;
            println!("{key}");
            let signed = if state.config.jwt_secret.is_some() {
                "HS256 with jwt_secret: changing jwt_secret ends it"
            } else {
                "ES256 with the current signing key: after `gatehouse jwt rotate` it works until the old key leaves the JWKS (jwt_expiry_seconds), so mint a new one then"
            };
            eprintln!("service key valid for {days} days, signed {signed}. It is shown only now.");
            Ok(())
        }
        Command::Jwt {
            action: JwtAction::Rotate,
        } => {
            let store = crate::store::Store::open(&config).await?;
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

/// Stops a command that would otherwise create an empty SQLite database (the usual cause:
/// running it in another folder than the server's, with the default relative path).
fn refuse_without_database(database_url: &str) -> anyhow::Result<()> {
    let Some(file) = crate::store::sqlite_file(database_url) else {
        return Ok(());
    };
    if file.exists() {
        return Ok(());
    }
    anyhow::bail!(
        "no database at {} (database_url = {database_url}). Run this where `gatehouse serve` \
         keeps its database, point GATEHOUSE_DATABASE_URL at it, or pass --create to make a \
         new, empty one there",
        file.display()
    )
}

/// `gatehouse restore`: checks the backup, then puts a copy of it where `database_url` points.
async fn restore(config: &Config, from: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let Some(target) = crate::store::sqlite_file(&config.database_url) else {
        anyhow::bail!(
            "gatehouse restore replaces a SQLite database file; database_url is {}",
            crate::store::describe(&config.database_url)
        );
    };
    let facts = crate::store::backup::inspect(from).await?;
    let done = crate::store::backup::restore(from, &target, force, Clock::System.now_ms()).await?;
    println!(
        "restored {} into {} ({} users, {} organizations, schema version {})",
        from.display(),
        target.display(),
        facts.users,
        facts.orgs,
        facts.schema_version
    );
    if let Some(kept) = done.kept {
        println!("the database it replaced is kept at {}", kept.display());
    }
    eprintln!("start gatehouse serve on it; it applies any newer migrations first");
    Ok(())
}

/// The first line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("--password-stdin: cannot read standard input: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("--password-stdin: standard input holds no password");
    }
    Ok(password)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    crate::mail::check_serve(&config)?;
    let listen = config.listen;
    let state = AppState::build(config, Clock::System).await?;
    // Held while serving, so `gatehouse restore` cannot replace the file under this server.
    let _lock = crate::store::sqlite_file(&state.config.database_url)
        .map(|f| crate::store::backup::ServeLock::take(&f))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, storage = ?state.runtime.store.engine(), "gatehouse listening");
    startup_facts(&state.config, addr);
    if let Some(n) = crate::server::raise_open_files_limit() {
        tracing::info!(open_files = n, "open-files limit (two per streamed chat)");
    }
    // The publishable key is public by design (like Supabase's anon key): printing it lets
    // a developer point a client at a fresh server.
    tracing::info!(publishable_key = %state.edge.publishable_key.expose_secret(), "clients send this in the apikey header");
    let metrics = crate::server::bind_metrics(&state.config).await?;
    if let Some(m) = &metrics {
        tracing::info!(addr = %m.local_addr()?, "metrics listening");
    }
    tokio::spawn(reload_keys(state.clone()));
    crate::server::serve(state, listener, metrics, crate::server::shutdown_signal()).await
}

/// What a newcomer needs from the start-up log: where the dashboard and the database are,
/// where mail goes without SMTP, what development mode relaxes, and a port mismatch that
/// would make the dashboard's sign-in fail.
fn startup_facts(config: &Config, addr: std::net::SocketAddr) {
    let c = config;
    tracing::info!(database = %crate::store::describe(&c.database_url), "storage opened");
    tracing::info!(url = %format!("{}/dashboard", c.public_base()), "dashboard");
    if let Some(warning) = c.port_mismatch(addr) {
        tracing::warn!("{warning}");
    }
    if c.smtp_url.is_none() {
        let dir = std::path::absolute(&c.mail_outbox_dir)
            .unwrap_or_else(|_| PathBuf::from(&c.mail_outbox_dir));
        tracing::info!(dir = %dir.display(), "no smtp_url: mails are not sent; each is written to the log and to a file in dir");
    }
    if c.dev {
        tracing::info!(
            origin = %c.public_origin(),
            "development mode: sign-ups are confirmed at once, and the dashboard accepts localhost, 127.0.0.1 and [::1] on the origin's port"
        );
    }
    if c.webhooks_private_allowed() {
        let why = if c.webhooks_allow_private {
            "webhooks_allow_private"
        } else {
            "development mode"
        };
        tracing::info!("{why}: webhook targets on private and loopback addresses are allowed");
    }
}

/// Picks up signing keys rotated by `gatehouse jwt rotate` (possibly on another host).
async fn reload_keys(state: AppState) {
    let every = std::time::Duration::from_secs(state.config.signing_key_reload_seconds);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = state.accounts.reload_signing_keys().await {
            tracing::warn!(error = %e, "signing keys not reloaded; will retry");
        }
    }
}

fn cli_audit() -> crate::store::Audit {
    crate::store::Audit {
        actor: "cli".into(),
        ip: None,
        now: Clock::System.now_ms(),
    }
}

async fn org_command(config: Config, action: OrgAction) -> anyhow::Result<()> {
    let state = AppState::build(config, Clock::System).await?;
    match action {
        OrgAction::Create { name, owner_email } => {
            let name = crate::orgs::check_name("name", &name, 100)?;
            let email = crate::domain::Email::parse(&owner_email)
                .map_err(|m| anyhow::anyhow!("--owner-email: {m}"))?;
            let owner = state
                .runtime
                .store
                .user_by_email(email.as_str())
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no user with email {owner_email}; create one with `gatehouse user create`"
                    )
                })?;
            let org = state
                .orgs
                .create(&name, &owner.id, &crate::orgs::By::cli())
                .await?;
            println!("{}", org.id);
            Ok(())
        }
        OrgAction::Invite { org, email, role } => {
            let org = crate::ids::OrgId::parse(&org)?;
            let address =
                crate::domain::Email::parse(&email).map_err(|m| anyhow::anyhow!("--email: {m}"))?;
            if state.orgs.role_permissions(&org, &role).await?.is_none() {
                anyhow::bail!("--role: no role {role:?} in organization {org}");
            }
            let inviter = crate::invitations::Inviter {
                id: "cli",
                email: "An administrator",
            };
            let inv = state
                .invitations
                .invite(&org, inviter, &address, &role, &crate::orgs::By::cli())
                .await?;
            eprintln!(
                "invited {} as {} (expires {})",
                inv.email,
                inv.role,
                crate::clock::rfc3339(inv.expires_at)
            );
            println!("{}", inv.id);
            Ok(())
        }
        OrgAction::List(page) => list::orgs(&state, page).await,
    }
}

async fn key_command(config: Config, action: KeyAction) -> anyhow::Result<()> {
    let state = AppState::build(config, Clock::System).await?;
    match action {
        KeyAction::Create {
            org,
            name,
            scopes,
            environment,
            expires_in_days,
            credits,
            refill,
            refill_amount,
            refill_day,
        } => {
            let org = crate::ids::OrgId::parse(&org).map_err(|e| anyhow::anyhow!("{e}"))?;
            let input = crate::keys::KeyInput {
                name,
                scopes: scopes.into_iter().filter(|s| !s.is_empty()).collect(),
                environment: Some(environment),
                expires_in_days: Some((expires_in_days != 0).then_some(expires_in_days)),
                metadata: None,
                rate_limits: None,
                credits: credits.map(|remaining| crate::keys::CreditsInput {
                    remaining,
                    refill: refill.map(|interval| crate::keys::RefillInput {
                        interval,
                        amount: refill_amount.unwrap_or(0),
                        day: refill_day,
                    }),
                }),
                budgets: None,
                chat_limits: Default::default(),
            };
            // The operator holds every permission; the rules on keys still apply.
            let minted = state
                .keys
                .create(&org, input, crate::keys::Creator::Operator, &cli_audit())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created {} ({}••••); the key is shown once:",
                minted.record.id, minted.record.start
            );
            println!("{}", minted.key);
            Ok(())
        }
        KeyAction::Revoke { org, id } => {
            let org = crate::ids::OrgId::parse(&org).map_err(|e| anyhow::anyhow!("{e}"))?;
            let id = crate::ids::KeyId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let k = state
                .keys
                .revoke(&org, &id, &cli_audit())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("revoked {} ({}••••)", k.id, k.start);
            if state.runtime.redis.is_none() {
                eprintln!(
                    "running servers stop accepting it within 60 s (their key cache lifetime)"
                );
            }
            Ok(())
        }
        KeyAction::List { org, page } => list::keys(&state, &org, page).await,
    }
}
