//! Folder-per-class image sets: `ROOT/<class>/<image>`. The folder name is the class name, with
//! `_` read as a space (`global_defect` → "global defect"). Classes are sorted by folder name so
//! that class indices are stable across runs and machines.

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
    /// Reads a folder-per-class tree. Sub-folders without images are an error (an empty class
    /// would silently never be predicted); files directly under `root` are ignored.
    pub fn read(root: &Path) -> Result<LabelledSet> {
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
            format!("cannot list folder: {}", crate::sidecar::io_reason(&e)),
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
