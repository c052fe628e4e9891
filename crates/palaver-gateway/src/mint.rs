//! `palaver token`: mints an access token for nodes running `--auth token`
//! (or guest mode with a key). For development, tests and scripts; in
//! production the identity provider signs tokens with the same claims.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use palaver_protocol::UserName;

use crate::{
    access::RoomPattern,
    token::{Claims, Secret, SigningKey, unix_now},
};

/// Mints a token and prints it on stdout.
#[derive(Debug, Parser)]
#[command(
    name = "palaver token",
    bin_name = "palaver token",
    about = "Mint a Palaver access token (a JWT) and print it",
    after_help = "Example: palaver token --secret S --sub alice --name Alice --rooms 'team-*,lobby' --ttl 1h"
)]
pub(crate) struct TokenArgs {
    /// Shared secret (HS256), the nodes' `--jwt-secret`.
    #[arg(
        long,
        env = "PALAVER_JWT_SECRET",
        hide_env_values = true,
        required_unless_present = "private_key"
    )]
    pub(crate) secret: Option<Secret>,

    /// Private key in PEM form instead of a secret: RSA signs RS256, EC P-256 ES256, Ed25519 EdDSA.
    #[arg(long, conflicts_with = "secret")]
    pub(crate) private_key: Option<PathBuf>,

    /// The user's id (`sub`).
    #[arg(long)]
    pub(crate) sub: String,

    /// Display name (`name`), shown to others; default: the `sub`.
    #[arg(long)]
    pub(crate) name: Option<String>,

    /// Rooms or patterns granted (`rooms`), comma-separated: `team-*,staff`, `*` for all.
    #[arg(long, value_delimiter = ',')]
    pub(crate) rooms: Vec<String>,

    /// Lifetime of the token (`exp` = now + ttl).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,

    /// Audience (`aud`), when the nodes check one.
    #[arg(long, alias = "audience", env = "PALAVER_JWT_AUDIENCE")]
    pub(crate) aud: Option<String>,

    /// Issuer (`iss`), when the nodes check one.
    #[arg(long, alias = "issuer", env = "PALAVER_JWT_ISSUER")]
    pub(crate) iss: Option<String>,
}

/// Builds and signs the token the arguments describe.
pub(crate) fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let name = args.name.as_deref().unwrap_or(&args.sub);
    UserName::parse_unmarked(name).with_context(|| format!("{name:?} is not a valid user name"))?;
    for room in &args.rooms {
        RoomPattern::parse(room).with_context(|| format!("{room:?} is not a room pattern"))?;
    }
    let key = match (&args.secret, &args.private_key) {
        (_, Some(path)) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            SigningKey::from_pem(&pem).map_err(anyhow::Error::msg)?
        }
        (Some(secret), None) => SigningKey::secret(secret),
        (None, None) => anyhow::bail!("give --secret or --private-key"),
    };
    let now = unix_now();
    let claims = Claims {
        sub: args.sub.clone(),
        name: args.name.clone(),
        exp: now.saturating_add(args.ttl.as_secs()),
        iat: Some(now),
        aud: args.aud.clone().map(serde_json::Value::String),
        iss: args.iss.clone(),
        rooms: args.rooms.iter().map(|r| r.trim().to_owned()).collect(),
    };
    key.sign(&claims).map_err(anyhow::Error::msg)
}

/// Whether the command line asks for the `token` subcommand (`palaver token ...`).
pub fn requested() -> bool {
    std::env::args_os().nth(1).is_some_and(|arg| arg == "token")
}

/// Runs `palaver token ...`: parses the arguments after `token`, prints the token.
pub fn run() -> anyhow::Result<()> {
    let args = TokenArgs::parse_from(std::env::args_os().skip(1));
    println!("{}", mint(&args)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Verifier;

    #[test]
    fn minted_tokens_verify() {
        let args = TokenArgs::try_parse_from([
            "token",
            "--secret",
            "S",
            "--sub",
            "alice",
            "--name",
            "Alice",
            "--rooms",
            "team-*,lobby",
            "--ttl",
            "1h",
        ])
        .expect("valid arguments");
        let token = mint(&args).expect("mints");
        let secret: Secret = "S".parse().expect("secret");
        let identity = Verifier::new(Some(&secret), None, None, None, Duration::ZERO)
            .expect("a key")
            .verify(&token)
            .expect("verifies");
        assert_eq!(identity.user.as_str(), "Alice");
        assert!(identity.grants.matches("team-x") && identity.grants.matches("lobby"));
    }

    #[test]
    fn bad_names_and_patterns_are_caught_before_signing() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["token", "--secret", "S", "--sub", "bob"];
            argv.extend_from_slice(extra);
            TokenArgs::try_parse_from(argv).expect("parses")
        };
        assert!(mint(&args(&["--name", "<b>"])).is_err());
        assert!(mint(&args(&["--rooms", "a b"])).is_err());
        assert!(
            TokenArgs::try_parse_from(["token", "--sub", "x"]).is_err()
                || std::env::var_os("PALAVER_JWT_SECRET").is_some()
        );
    }
}
