//! `kanban-watchdog generate` (hidden): shell completions and man pages,
//! generated from the clap definitions in [`crate::cli`], so they cannot
//! drift from the binary they come with.
//!
//! ```text
//! kanban-watchdog generate completions bash > /etc/bash_completion.d/kanban-watchdog
//! kanban-watchdog generate man --out-dir /usr/local/share/man/man1
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

#[derive(Debug, clap::Subcommand)]
pub enum GenerateTarget {
    /// A completion script for a shell, on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
    /// Man pages (roff): kanban-watchdog.1 on stdout, or with --out-dir one
    /// page per command (kanban-watchdog.1, kanban-watchdog-run.1, ...).
    Man {
        /// Write every page into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

pub fn run(target: &GenerateTarget) -> anyhow::Result<()> {
    match target {
        GenerateTarget::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            completions(*shell, &mut out);
            Ok(())
        }
        GenerateTarget::Man { out_dir: None } => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(crate::cli::Cli::command()).render(&mut out)?;
            Ok(())
        }
        GenerateTarget::Man { out_dir: Some(dir) } => {
            for page in man_pages(dir)? {
                println!("{}", page.display());
            }
            Ok(())
        }
    }
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "kanban-watchdog", out);
}

/// Writes one man page per visible command into `dir`; returns their paths.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = crate::cli::Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        // After `build()`, a subcommand's display name is the full command
        // (kanban-watchdog-provider-reset), which names its page.
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
