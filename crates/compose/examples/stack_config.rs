//! `stack config` with this crate: `cargo run -p shoal-compose --example stack_config -- [--skip-interpolation] FILE…`
//! Prints the merged model as YAML (stdout) and the deploy warnings (stderr).

fn main() {
    let mut skip = false;
    let mut files = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "--skip-interpolation" {
            skip = true;
        } else {
            files.push(a);
        }
    }
    let opts = shoal_compose::LoadOptions {
        files,
        env: std::env::vars().collect(),
        skip_interpolation: skip,
    };
    match shoal_compose::load(&opts) {
        Ok(p) => {
            let w = p.warnings();
            for l in &w.loader {
                eprintln!("level=warning msg={l:?}");
            }
            eprint!("{}", w.deploy_text());
            print!("{}", p.to_yaml());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
