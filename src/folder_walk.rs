//! The bounded walk of a `depends_on` folder, shared by the time-based validators (the newest
//! mtime inside it) and the content-based ETag (the names and digests of its files).

use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// A folder dependency is walked at most this deep and this wide; beyond it, the folder's own
/// mtime still counts (it changes whenever an entry is added or removed).
pub const MAX_WALK_DEPTH: usize = 8;
/// See [`MAX_WALK_DEPTH`].
pub const MAX_WALK_ENTRIES: usize = 10_000;

/// Calls `visit` with the path (relative to `root`) and metadata (symlinks followed) of every
/// entry below the folder `root`, depth first in byte order of the names at each level, so two
/// machines holding the same tree visit it in the same order. At most [`MAX_WALK_ENTRIES`]
/// entries, [`MAX_WALK_DEPTH`] levels; entries that vanish or cannot be read are skipped.
pub fn walk(root: &Path, mut visit: impl FnMut(&Path, &Metadata)) {
    let mut budget = MAX_WALK_ENTRIES;
    walk_level(root, Path::new(""), 0, &mut budget, &mut visit);
}

fn walk_level(
    root: &Path,
    relative: &Path,
    depth: usize,
    budget: &mut usize,
    visit: &mut dyn FnMut(&Path, &Metadata),
) {
    let Ok(entries) = std::fs::read_dir(root.join(relative)) else {
        return;
    };
    // The listing is read whole before sorting; it is bounded like the walk, so a folder of a
    // million entries costs no more than the budget allows.
    let mut names: Vec<_> = entries
        .flatten()
        .map(|e| e.file_name())
        .take(*budget)
        .collect();
    names.sort_unstable();
    for name in names {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let path: PathBuf = relative.join(&name);
        let Ok(meta) = std::fs::metadata(root.join(&path)) else {
            continue;
        };
        visit(&path, &meta);
        if meta.is_dir() && depth + 1 < MAX_WALK_DEPTH {
            walk_level(root, &path, depth + 1, budget, visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_walked_in_name_order_whatever_the_creation_order() {
        let dir = std::env::temp_dir().join(format!("hc-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("b/inner")).unwrap();
        for file in ["c.txt", "a.txt", "b/inner/z", "b/y"] {
            std::fs::write(dir.join(file), "x").unwrap();
        }
        let mut seen = Vec::new();
        walk(&dir, |path, _| seen.push(path.display().to_string()));
        assert_eq!(seen, ["a.txt", "b", "b/inner", "b/inner/z", "b/y", "c.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
