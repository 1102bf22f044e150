//! `testbed admin`: local recovery commands that work on the store itself,
//! without a running server or a login (whoever can open the store owns it).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::server::StoreArgs;

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Set a user's password straight in the store (the server must be
    /// stopped for a redb data dir; etcd works live). Ends the user's
    /// sessions; creates the user as an admin when missing.
    ResetPassword(ResetPasswordArgs),
}

#[derive(Args, Debug)]
pub struct ResetPasswordArgs {
    /// The data dir of `testbed up` (its store is DIR/testbed.redb).
    #[arg(long, value_name = "DIR", conflicts_with = "store")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The user whose password is set.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Read the new password from stdin (else TESTBED_ADMIN_PASSWORD, else
    /// one is generated and printed once).
    #[arg(long)]
    pub password_stdin: bool,
}

/// Same rule as the users API.
const MIN_PASSWORD_CHARS: usize = 8;

pub async fn admin(cmd: AdminCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCmd::ResetPassword(a) => reset_password(a).await,
    }
}

async fn reset_password(args: ResetPasswordArgs) -> anyhow::Result<ExitCode> {
    if args.user.is_empty() {
        anyhow::bail!("--user must not be empty");
    }
    let spec = match &args.data_dir {
        Some(dir) => format!("redb:{}", dir.join("testbed.redb").display()),
        None => args.store.store.clone(),
    };
    if let Some(path) = spec.strip_prefix("redb:") {
        // Opening a redb path creates it: a mistyped dir would get a fresh
        // store with an admin nobody's server uses.
        if !std::path::Path::new(path).exists() {
            anyhow::bail!(
                "no store at {path}: give the --data-dir of the `testbed up` (or the --store of \
                 the `testbed server`) whose password to reset"
            );
        }
    }
    let (password, generated) = new_password(args.password_stdin)?;
    let store = match testbed_store::open(&spec, args.store.etcd_options()).await {
        Ok(s) => s,
        Err(e) if spec.starts_with("redb:") => anyhow::bail!(
            "cannot open the store: {e}\nA redb data dir is locked by the Testbed server using \
             it: stop that `testbed up` / `testbed server` first, then run this again"
        ),
        Err(e) => return Err(e).with_context(|| format!("opening store {spec}")),
    };
    let done = testbed_server::auth::reset_password(&store, &args.user, password)
        .await
        .map_err(|e| anyhow::anyhow!("setting the password: {}", e.message))?;
    drop(store);
    let user = &args.user;
    if done.created {
        println!("created admin user `{user}` in {spec}");
    } else {
        println!("password of `{user}` reset in {spec}; every session of `{user}` has ended");
    }
    match generated {
        Some(p) => println!("login: {user} / {p}   (generated; shown only this once)"),
        None => println!("login: {user} / the password you gave"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The new password and, when generated, the same to print.
fn new_password(from_stdin: bool) -> anyhow::Result<(String, Option<String>)> {
    let given = if from_stdin {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("reading the password from stdin")?;
        let line = buf.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            anyhow::bail!("--password-stdin: stdin held no password");
        }
        Some(line)
    } else {
        std::env::var("TESTBED_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
    };
    match given {
        Some(p) if p.chars().count() < MIN_PASSWORD_CHARS => {
            anyhow::bail!("the new password must have at least {MIN_PASSWORD_CHARS} characters")
        }
        Some(p) => Ok((p, None)),
        None => {
            let p = testbed_server::auth::random_token(12);
            Ok((p.clone(), Some(p)))
        }
    }
}
