//! The command line: the one clap definition that the binary parses (and that the man pages and
//! shell completions are generated from), and the dispatch from a parsed command to its mode.
//!
//! Under a web server (CGI mode) the command line may carry the visitor's search words, so that
//! path parses CGI mode's arguments alone ([`run_for_server`]): no subcommand and no flag of
//! another mode is reachable.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::{cgi, check, explain, fastcgi, front_end, log, request::Request, serve};

/// Answers 304/412 for legacy CGI scripts without running them.
#[derive(Parser)]
#[command(
    name = "http-conditional",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    cgi: CgiArgs,
}

/// CGI mode (the default): `[--timeout SECONDS] [INTERPRETER] [SCRIPT]`.
#[derive(Args)]
struct CgiArgs {
    /// Seconds a script may run before 504 (default 30; the sidecar's `timeout` wins).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// `[INTERPRETER] SCRIPT`, as a shebang line or Apache passes them.
    #[arg(value_name = "ARGS", num_args = 0..)]
    positional: Vec<OsString>,
}

#[derive(Subcommand)]
enum Command {
    /// Run as a FastCGI responder (behind nginx, Apache mod_proxy_fcgi, systemd sockets).
    Fastcgi {
        /// Only scripts whose real path (symlinks resolved) lies under this folder run;
        /// repeat it for a packaged app linked into the document root (/usr/share/gitweb).
        #[arg(long = "root", value_name = "DIR", required = true)]
        roots: Vec<PathBuf>,
        /// The account scripts run as, `USER[:GROUP]`; required when started as root (the
        /// socket is created first, then root is given up for good).
        #[arg(long, value_name = "USER[:GROUP]")]
        user: Option<String>,
        /// The group of the unix socket created (the web server's), default the user's.
        #[arg(long, value_name = "GROUP")]
        socket_group: Option<String>,
        /// `unix:/path.sock` or `HOST:PORT`; without it, the socket inherited as fd 0.
        #[arg(long)]
        listen: Option<String>,
        /// Scripts running at once (default 4 × CPUs).
        #[arg(long)]
        max_children: Option<usize>,
        /// Seconds a request waits for a free slot before 503.
        #[arg(long, default_value_t = 10.0)]
        queue_timeout: f64,
        /// Seconds a script may run before 504 (the sidecar's `timeout` wins).
        #[arg(long)]
        timeout: Option<f64>,
        #[command(flatten)]
        upstream: UpstreamArgs,
        /// A site rules file (TOML) declaring scripts; re-read on SIGHUP.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Serve the scripts under a folder over HTTP/1.1, to try sidecars without a web server.
    Serve {
        /// The folder whose scripts are served.
        #[arg(long)]
        root: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Seconds a script may run before 504 (the sidecar's `timeout` wins).
        #[arg(long)]
        timeout: Option<f64>,
        #[command(flatten)]
        upstream: UpstreamArgs,
        /// A site rules file (TOML) declaring scripts; re-read on SIGHUP.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        #[command(flatten)]
        limits: serve::Limits,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Validate a rules file (TOML) or a sidecar (.json), like `nginx -t`.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Show the validators, conditions and decision for a script, without running its body.
    Explain {
        /// The script.
        script: PathBuf,
        /// A request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The query string.
        #[arg(long, default_value = "")]
        query: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// A site rules file (TOML) the script may be declared by.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
    },
}

/// Forwarding to a FastCGI application already running (php-fpm).
#[derive(Args)]
struct UpstreamArgs {
    /// `unix:/path` or `HOST:PORT` of a FastCGI application (php-fpm) that serves every script
    /// whose declaration names no other; 304 and 412 are still answered without it.
    #[arg(long, value_name = "ADDR")]
    upstream: Option<String>,
    /// Idle connections kept per upstream (php-fpm ties a worker to each).
    #[arg(long, value_name = "N", default_value_t = front_end::DEFAULT_UPSTREAM_KEEP)]
    upstream_keep: usize,
    /// Seconds an idle upstream connection is kept before it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = front_end::DEFAULT_UPSTREAM_IDLE_SECONDS)]
    upstream_idle_timeout: f64,
}

impl From<UpstreamArgs> for front_end::UpstreamOptions {
    fn from(args: UpstreamArgs) -> Self {
        front_end::UpstreamOptions {
            upstream: args.upstream,
            keep: args.upstream_keep,
            idle_timeout: args.upstream_idle_timeout,
        }
    }
}

/// What the long-running modes tell operators: metrics and the log's format.
#[derive(Args)]
struct OperatorArgs {
    /// `HOST:PORT` of a listener of its own serving Prometheus metrics at /metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Error-log and access lines as text, or one JSON object per line.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = log::Format::Text)]
    log_format: log::Format,
}

/// The only command line accepted under a web server: CGI mode's own arguments.
#[derive(Parser)]
#[command(name = "http-conditional", no_binary_name = true)]
struct CgiOnly {
    #[command(flatten)]
    cgi: CgiArgs,
}

impl From<CgiArgs> for cgi::Options {
    fn from(args: CgiArgs) -> Self {
        cgi::Options {
            timeout: args.timeout,
            positional: args.positional,
        }
    }
}

/// CGI mode as a web server started it ([`cgi::invoked_by_server`]).
///
/// The command line may carry the visitor's search words (RFC 3875 §4.4): they are dropped
/// before parsing, and what is left is parsed as CGI mode's arguments only, so no search word
/// ever selects a subcommand or a flag's side effect (`?--help`, `?serve`).
pub fn run_for_server() -> ExitCode {
    let request = Request::from_process_env();
    let args = cgi::own_arguments(std::env::args_os().skip(1).collect(), &request);
    // Most starts carry no flag (Apache `Action`: none at all; a shebang: the interpreter and
    // the script): those are CGI mode's positionals as clap would read them, and building the
    // parser would be most of the start-up's own work.
    if args
        .iter()
        .all(|arg| !arg.as_encoded_bytes().starts_with(b"-"))
    {
        let options = cgi::Options {
            timeout: None,
            positional: args,
        };
        return cgi::run(options, request);
    }
    match CgiOnly::try_parse_from(args) {
        Ok(parsed) => cgi::run(parsed.cgi.into(), request),
        Err(e) => cgi::refuse_arguments(&e.to_string()),
    }
}

/// Runs the mode a command line typed outside a web server selects.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => Ok(cgi::run(cli.cgi.into(), Request::from_process_env())),
        Some(Command::Fastcgi {
            roots,
            user,
            socket_group,
            listen,
            max_children,
            queue_timeout,
            timeout,
            upstream,
            rules,
            operator,
        }) => {
            log::set_format(operator.log_format);
            fastcgi::run(fastcgi::Options {
                roots,
                user,
                socket_group,
                listen,
                max_children,
                queue_timeout,
                timeout,
                upstream: upstream.into(),
                rules,
                metrics: operator.metrics,
            })
        }
        Some(Command::Serve {
            root,
            listen,
            timeout,
            upstream,
            rules,
            limits,
            operator,
        }) => {
            log::set_format(operator.log_format);
            serve::run(serve::Options {
                root,
                listen,
                timeout,
                upstream: upstream.into(),
                rules,
                limits,
                metrics: operator.metrics,
            })
        }
        Some(Command::Check { file }) => Ok(check::run(&file)),
        Some(Command::Explain {
            script,
            headers,
            method,
            query,
            json,
            rules,
        }) => explain::run(explain::Options {
            script,
            headers,
            method,
            query,
            json,
            rules,
        }),
    }
}
