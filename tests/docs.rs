//! The documentation's examples are tests: every `console` block of the README and of
//! `docs/guide.md` runs with trycmd against the real binary and model, on a copy of the seeds, and
//! its output must match what the page shows (`[..]` and `...` stand for what varies: timings).
//! A changed flag or output fails here instead of leaving the documentation wrong.

mod common;

#[test]
fn the_console_examples_of_the_documentation_run_as_shown() {
    let root = common::root();
    let work = tempfile::tempdir().unwrap();
    // Each page runs in a folder of its own holding the seeds (trycmd's `NAME.in/`), its blocks
    // in order, so the README's `index` makes the store its later blocks query.
    for (page, name) in [("README.md", "readme"), ("docs/guide.md", "guide")] {
        std::fs::copy(root.join(page), work.path().join(format!("{name}.md"))).unwrap();
        common::copy_dir(
            &root.join("seeds"),
            &work.path().join(format!("{name}.in/seeds")),
        );
    }
    trycmd::TestCases::new()
        .register_bin("likewise", trycmd::cargo::cargo_bin("likewise"))
        .env("LIKEWISE_MODEL", common::model_dir().display().to_string())
        .env("NO_COLOR", "1")
        .case(work.path().join("*.md"));
}
