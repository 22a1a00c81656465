pub use shoal_gotemplate::*;
