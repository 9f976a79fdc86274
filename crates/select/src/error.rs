use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Format(#[from] illama_formats::FormatError),
    #[error("teacher '{spec}' not found; looked at:\n{}", looked.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n"))]
    TeacherNotFound { spec: String, looked: Vec<PathBuf> },
    #[error("{0}")]
    Teacher(String),
    #[error("student: {0}")]
    Architecture(#[from] illama_arch::ArchError),
    /// The student does not fit the teacher.
    #[error("student: {0}")]
    Student(String),
    /// The layer choice does not fit the student or the teacher.
    #[error("student: {0}")]
    Layers(#[from] crate::indices::LayerError),
}
