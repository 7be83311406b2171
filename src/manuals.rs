//! Man pages and shell completions, generated from the command line's own clap definition (as
//! ripgrep's `--generate` does), so what is documented is what the binary parses.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use clap::Command;
use clap_complete::Shell;

/// Writes one man page per visible command into `out/man` (`http-conditional.1`,
/// `http-conditional-fastcgi.1`, ...) and the bash, zsh and fish completions into
/// `out/completions`, under the names Debian installs them by.
pub fn write(command: Command, out: &Path) -> io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let name = command.get_name().to_owned();
    // Every page names the package and version it documents (clap_mangen's own loop gives
    // subcommands' pages only their name, as they carry no version).
    let source = format!("{name} {}", command.get_version().unwrap_or_default());
    let mut built = command.clone().disable_help_subcommand(true);
    built.build();
    let visible = built.get_subcommands().filter(|sub| !sub.is_hide_set());
    for page in std::iter::once(&built).chain(visible) {
        let page = clap_mangen::Man::new(page.clone()).source(source.clone());
        let mut sink = File::create(man.join(page.get_filename()))?;
        page.render(&mut sink)?;
        sink.flush()?;
    }
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut command = command.clone();
        let mut sink = File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut command, &name, &mut sink);
        sink.flush()?;
    }
    Ok(())
}
