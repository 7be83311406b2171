//! The Debian package as `bash scripts/package.sh` builds it: its contents, lintian, and the
//! binary extracted from it (never installed system-wide) driven as a CGI program.
//!
//! The package is built once per run of this test binary (a release build: about a minute and
//! a half on two cores with dependencies cold).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Cgi, TempDir};

/// The package built once, its file list, its control files and its files extracted (under
/// Cargo's temp folder for tests, as a static is never dropped).
struct Package {
    deb: PathBuf,
    listing: String,
    control: PathBuf,
    files: PathBuf,
}

fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts/package.sh"))
            .output()
            .expect("run scripts/package.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "package.sh failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let deb = PathBuf::from(stdout.lines().last().unwrap_or_default());
        assert!(
            deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
            "package.sh's last line is not a .deb: {stdout:?}"
        );
        let listing = run("dpkg-deb", &["-c".as_ref(), deb.as_os_str()]);
        let unpacked = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
        let _ = std::fs::remove_dir_all(&unpacked);
        std::fs::create_dir_all(&unpacked).expect("create the unpack folder");
        let (control, files) = (unpacked.join("control"), unpacked.join("files"));
        run(
            "dpkg-deb",
            &["-e".as_ref(), deb.as_os_str(), control.as_os_str()],
        );
        run(
            "dpkg-deb",
            &["-x".as_ref(), deb.as_os_str(), files.as_os_str()],
        );
        Package {
            deb,
            listing,
            control,
            files,
        }
    })
}

/// Runs a program to success and returns its stdout.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the ELF file at `path` has a PT_INTERP program header, that is, needs the dynamic
/// loader. ELF64 little-endian only (the package is amd64).
fn needs_loader(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let elf = std::fs::read(path).expect("read the binary");
    assert_eq!(
        &elf[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    assert_eq!((elf[4], elf[5]), (2, 1), "not ELF64 little-endian");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

#[test]
fn package_holds_the_binary_man_pages_completions_units_examples_and_rules_file() {
    let listing = &package().listing;
    for path in [
        "./usr/bin/http-conditional",
        "./usr/share/man/man1/http-conditional.1.gz",
        "./usr/share/man/man1/http-conditional-fastcgi.1.gz",
        "./usr/share/man/man1/http-conditional-serve.1.gz",
        "./usr/share/man/man1/http-conditional-explain.1.gz",
        "./usr/share/bash-completion/completions/http-conditional",
        "./usr/share/zsh/vendor-completions/_http-conditional",
        "./usr/share/fish/vendor_completions.d/http-conditional.fish",
        "./usr/lib/systemd/system/http-conditional.service",
        "./usr/lib/systemd/system/http-conditional.socket",
        "./usr/share/doc/http-conditional/examples/nginx/http-conditional.conf",
        "./usr/share/doc/http-conditional/examples/nginx/http-conditional-params.conf",
        "./usr/share/doc/http-conditional/examples/nginx/http-conditional-php-fpm.conf",
        "./usr/share/doc/http-conditional/examples/nginx/http-conditional-gitweb.conf",
        "./usr/share/doc/http-conditional/examples/nginx/http-conditional-upstream.conf",
        "./usr/share/doc/http-conditional/examples/apache/php-fpm.conf",
        "./usr/share/doc/http-conditional/examples/varnish/http-conditional.vcl",
        "./usr/share/doc/http-conditional/examples/apache/action-cgi.conf",
        "./usr/share/doc/http-conditional/examples/apache/fastcgi.conf",
        "./usr/share/doc/http-conditional/copyright",
        "./usr/share/doc/http-conditional/changelog.Debian.gz",
        "./usr/share/doc/http-conditional/changelog.gz",
        "./etc/http-conditional/site.toml",
    ] {
        assert!(
            listing.lines().any(|line| line.ends_with(path)),
            "dpkg-deb -c lists no {path}:\n{listing}"
        );
    }
    let bin = listing
        .lines()
        .find(|line| line.ends_with("./usr/bin/http-conditional"))
        .unwrap_or_default();
    assert!(bin.starts_with("-rwxr-xr-x 0/0 "), "{bin}");
}

#[test]
fn the_example_rules_file_is_a_conffile_and_valid_toml() {
    let package = package();
    let conffiles = std::fs::read_to_string(package.control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/http-conditional/site.toml");
    let site = package.files.join("etc/http-conditional/site.toml");
    let parsed = run(
        "python3",
        &[
            "-c".as_ref(),
            "import sys, tomllib; print(sorted(tomllib.load(open(sys.argv[1], 'rb'))))".as_ref(),
            site.as_os_str(),
        ],
    );
    assert_eq!(
        parsed.trim(),
        "['defaults']",
        "as shipped it declares no script"
    );
}

#[test]
fn systemd_units_are_hardened_and_shipped_disabled() {
    let package = package();
    // No maintainer script: nothing enables or starts the units on install.
    for script in ["postinst", "prerm", "postrm", "preinst"] {
        assert!(
            !package.control.join(script).exists(),
            "the package has a {script}"
        );
    }
    let service = std::fs::read_to_string(
        package
            .files
            .join("usr/lib/systemd/system/http-conditional.service"),
    )
    .unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=",
        "StandardInput=socket",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "the service lacks {line}"
        );
    }
}

#[test]
fn lintian_reports_no_errors() {
    let Some(lintian) = common::require("lintian") else {
        return;
    };
    let package = package();
    let out = Command::new(lintian)
        .arg(&package.deb)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&out.stdout);
    // Warnings are shown, not fatal; packaging/lintian-overrides explains the ones overridden.
    eprintln!("{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        out.status.success(),
        "lintian failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn packaged_binary_is_statically_linked() {
    let bin = package().files.join("usr/bin/http-conditional");
    assert!(
        !needs_loader(&bin),
        "{} needs the dynamic loader",
        bin.display()
    );
}

#[test]
fn packaged_binary_answers_a_declared_scripts_matching_if_none_match_with_304() {
    let bin = package().files.join("usr/bin/http-conditional");
    let dir = TempDir::new("package-cgi");
    let marker = dir.join("ran");
    let script = dir.write(
        "page.cgi",
        format!(
            "#!/bin/sh\ntouch '{}'\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n",
            marker.display()
        ),
        true,
    );
    dir.sidecar("page.cgi", r#"{"last_modified": 1700000000}"#);
    let first = Cgi::new(&script).program(&bin).run();
    assert_eq!(first.status, 200, "{}", first.stderr);
    assert_eq!(first.text(), "hello\n");
    let etag = first.header("ETag").expect("an ETag").to_owned();
    std::fs::remove_file(&marker).unwrap();

    let second = Cgi::new(&script)
        .program(&bin)
        .header("IF_NONE_MATCH", etag.as_str())
        .run();
    assert_eq!(second.status, 304, "{}", second.stderr);
    assert!(second.body.is_empty());
    assert_eq!(second.header("ETag"), Some(etag.as_str()));
    assert!(!marker.exists(), "the script ran for the 304");
}

#[test]
fn packaged_binary_starts_the_script_in_its_folder_with_its_body_and_sigpipe_at_the_default() {
    // The static binary starts scripts through posix_spawn (scripts/package.sh links in the
    // chdir action std looks for), as the dynamic build does: the script's folder, its body on
    // stdin and the default SIGPIPE action (the wrapper itself ignores SIGPIPE) must hold there.
    let bin = package().files.join("usr/bin/http-conditional");
    let dir = TempDir::new("package-spawn");
    let script = dir.write(
        "where.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\npwd\ncat\necho\n\
         sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status\n",
        true,
    );
    let r = Cgi::new(&script)
        .program(&bin)
        .method("POST")
        .body("the body")
        .run();
    assert_eq!(r.status, 200, "{}", r.stderr);
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        [dir.path.display().to_string().as_str(), "the body"]
    );
    let ignored = u64::from_str_radix(lines[2], 16).expect("SigIgn is a hex mask");
    assert_eq!(
        ignored & (1 << (13 - 1)),
        0,
        "SIGPIPE ignored in the script"
    );
}

#[test]
fn packaged_man_page_documents_the_fastcgi_command_line() {
    let page = package()
        .files
        .join("usr/share/man/man1/http-conditional-fastcgi.1.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&page).unwrap())
        .read_to_string(&mut text)
        .expect("a gzipped man page");
    for option in [r"\-\-root", r"\-\-listen", r"\-\-max\-children"] {
        assert!(
            text.contains(option),
            "no {option} in the man page:\n{text}"
        );
    }
}

#[test]
fn packaged_completions_load_and_offer_every_visible_command() {
    let files = &package().files;
    let bash = files.join("usr/share/bash-completion/completions/http-conditional");
    let loaded = run(
        "bash",
        &[
            "-c".as_ref(),
            "source \"$1\" && complete -p http-conditional".as_ref(),
            "bash".as_ref(),
            bash.as_os_str(),
        ],
    );
    assert!(loaded.contains("http-conditional"), "{loaded}");
    for file in [
        "usr/share/bash-completion/completions/http-conditional",
        "usr/share/zsh/vendor-completions/_http-conditional",
        "usr/share/fish/vendor_completions.d/http-conditional.fish",
    ] {
        let text = std::fs::read_to_string(files.join(file)).unwrap();
        for command in ["fastcgi", "serve", "explain"] {
            assert!(text.contains(command), "{file} does not offer {command}");
        }
    }
}
