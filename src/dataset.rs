//! Folder-per-class image sets: `ROOT/<class>/<image>`. The folder name is the class name, with
//! `_` read as a space (`global_defect` → "global defect"). Classes are sorted by folder name so
//! that class indices are stable across runs and machines.
//!
//! A split file can stand in for a folder: a text file listing one image per line as
//! `<class folder>/<file>` relative to the split file's own folder (`#` starts a comment), so
//! train / val / test splits can share one image tree.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File extensions taken as images when walking folders.
pub const IMAGE_EXTENSIONS: [&str; 8] =
    ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "jfif"];

pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

#[derive(Debug, Clone)]
pub struct ClassFolder {
    /// Folder name as on disk.
    pub folder: String,
    /// Human class name (`_` → space): what goes into prompts and output.
    pub name: String,
    /// Image files, sorted.
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct LabelledSet {
    pub root: PathBuf,
    pub classes: Vec<ClassFolder>,
}

impl LabelledSet {
    /// Reads a folder-per-class tree, or a split file (see the module doc). Sub-folders
    /// without images are an error (an empty class would silently never be predicted); files
    /// directly under `root` are ignored.
    pub fn read(root: &Path) -> Result<LabelledSet> {
        if root.is_file() {
            return Self::read_split(root);
        }
        let dirs: Vec<PathBuf> = read_dir_paths(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        if dirs.is_empty() {
            return Err(Error::dataset(
                root,
                "no class folders (expected ROOT/<class>/<image files>)",
            ));
        }
        let mut classes = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let folder = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let images = list_images(&dir)?;
            if images.is_empty() {
                return Err(Error::dataset(&dir, "class folder has no image files"));
            }
            classes.push(ClassFolder {
                name: folder.replace('_', " "),
                folder,
                images,
            });
        }
        Ok(LabelledSet {
            root: root.to_path_buf(),
            classes,
        })
    }

    fn read_split(file: &Path) -> Result<LabelledSet> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::dataset(
                file,
                format!("cannot read split file: {}", crate::error::io_reason(&e)),
            )
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut by_class: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let rel = Path::new(line);
            let mut parts = rel.components();
            let (Some(class), Some(_)) = (parts.next(), parts.next()) else {
                return Err(Error::dataset(
                    file,
                    format!(
                        "line {}: expected <class folder>/<image file>, got '{line}'",
                        n + 1
                    ),
                ));
            };
            let class = class.as_os_str().to_string_lossy().into_owned();
            by_class.entry(class).or_default().push(base.join(rel));
        }
        if by_class.is_empty() {
            return Err(Error::dataset(file, "split file lists no images"));
        }
        let classes = by_class
            .into_iter()
            .map(|(folder, mut images)| {
                images.sort();
                images.dedup();
                ClassFolder {
                    name: folder.replace('_', " "),
                    folder,
                    images,
                }
            })
            .collect();
        Ok(LabelledSet {
            root: base.to_path_buf(),
            classes,
        })
    }

    /// K-shot sampling: `k` images of each class drawn at random with `seed` (the same draw on
    /// every machine; each class has its own stream, so adding a class changes no other
    /// class's shots), kept in name order. A class with fewer than `k` images is an error.
    pub fn sample_k_shot(&self, k: usize, seed: u64) -> Result<LabelledSet> {
        if k == 0 {
            return Err(Error::dataset(
                &self.root,
                "shots per class must be at least 1",
            ));
        }
        let mut classes = Vec::with_capacity(self.classes.len());
        for class in &self.classes {
            let n = class.images.len();
            if n < k {
                return Err(Error::dataset(
                    self.root.join(&class.folder),
                    format!("class has {n} image(s), fewer than the {k} shots asked for"),
                ));
            }
            let mut order: Vec<usize> = (0..n).collect();
            let name_hash = class
                .folder
                .bytes()
                .fold(0u64, |h, b| crate::rng::mix64(h ^ u64::from(b)));
            crate::rng::Rng::new(crate::rng::derive_seed(seed, &[0x5407, name_hash]))
                .shuffle(&mut order);
            let mut chosen: Vec<usize> = order[..k].to_vec();
            chosen.sort_unstable();
            classes.push(ClassFolder {
                images: chosen.iter().map(|&i| class.images[i].clone()).collect(),
                ..class.clone()
            });
        }
        Ok(LabelledSet {
            root: self.root.clone(),
            classes,
        })
    }

    /// The largest number of images in one class.
    pub fn max_per_class(&self) -> usize {
        self.classes
            .iter()
            .map(|c| c.images.len())
            .max()
            .unwrap_or(0)
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name.clone()).collect()
    }

    /// (path, class index) for every image, class by class.
    pub fn items(&self) -> Vec<(PathBuf, usize)> {
        self.classes
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.images.iter().map(move |p| (p.clone(), i)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.classes.iter().map(|c| c.images.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Image files directly inside `dir`, sorted.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut images = read_dir_paths(dir)?;
    images.retain(|p| p.is_file() && is_image_path(p));
    Ok(images)
}

/// The entries of `dir`, sorted, or a one-line error naming the folder.
fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::dataset(
            dir,
            format!("cannot list folder: {}", crate::error::io_reason(&e)),
        )
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

/// Expands command-line inputs: files are taken as given (whatever their extension, so a bad
/// file is reported rather than skipped), folders are walked recursively for image files.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut out)?;
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in read_dir_paths(dir)? {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image_path(&p) {
            out.push(p);
        }
    }
    Ok(())
}
