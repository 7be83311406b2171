use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use http_conditional::{cgi, check, explain, fastcgi, request::Request, serve};

/// Answers 304/412 for legacy CGI scripts without running them.
#[derive(Parser)]
#[command(
    name = "http-conditional",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
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
        /// Only scripts whose real path lies under this folder run.
        #[arg(long)]
        root: PathBuf,
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
    },
}

#[derive(Parser)]
#[command(name = "http-conditional", no_binary_name = true)]
struct CgiOnly {
    #[command(flatten)]
    cgi: CgiArgs,
}

fn cgi_options(args: CgiArgs) -> cgi::Options {
    cgi::Options {
        timeout: args.timeout,
        positional: args.positional,
    }
}

fn main() -> ExitCode {
    if cgi::invoked_by_server() {
        // Under a web server the command line may carry the visitor's search words: drop them
        // before parsing, and never let them select a subcommand or a flag's side effect.
        let request = Request::from_process_env();
        let args = cgi::own_arguments(std::env::args_os().skip(1).collect(), &request);
        return match CgiOnly::try_parse_from(args) {
            Ok(parsed) => cgi::run(cgi_options(parsed.cgi), request),
            Err(e) => cgi::refuse_arguments(&e.to_string()),
        };
    }
    let cli = Cli::parse();
    let result = match cli.command {
        None => return cgi::run(cgi_options(cli.cgi), Request::from_process_env()),
        Some(Command::Fastcgi {
            root,
            listen,
            max_children,
            queue_timeout,
            timeout,
        }) => fastcgi::run(fastcgi::Options {
            root,
            listen,
            max_children,
            queue_timeout,
            timeout,
        }),
        Some(Command::Serve {
            root,
            listen,
            timeout,
        }) => serve::run(serve::Options {
            root,
            listen,
            timeout,
        }),
        Some(Command::Check { file }) => return check::run(&file),
        Some(Command::Explain {
            script,
            headers,
            method,
            query,
            json,
        }) => explain::run(explain::Options {
            script,
            headers,
            method,
            query,
            json,
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("http-conditional: {e:#}");
            ExitCode::FAILURE
        }
    }
}
