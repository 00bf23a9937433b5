//! Cross-crate tests of fovea (see `tests/*.rs` beside this file). Fixtures that later
//! issues add (diffusers outputs, tiny models) live in `tests/fixtures/`.
