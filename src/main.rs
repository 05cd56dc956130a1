use clap::error::ErrorKind;
use clap::Parser;
use edge_sample::app;
use edge_sample::cli::Cli;
use edge_sample::plan::Plan;

/// Counts the heap, so that a model's load has a ceiling (`edge_sample::budget`).
#[global_allocator]
static HEAP: edge_sample::budget::Counting = edge_sample::budget::Counting;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            // "the following required arguments were not provided:" is only whole with the
            // argument names and usage clap prints after it (exit code 2).
            | ErrorKind::MissingRequiredArgument => e.exit(),
            _ => {
                // clap's message, kept to its first line: one line naming the problem.
                let text = e.render().to_string();
                let line = text.lines().next().unwrap_or("invalid arguments");
                eprintln!("edge-sample: {}", line.trim_start_matches("error: "));
                std::process::exit(2);
            }
        },
    };
    // Every option is checked into a plan before anything runs.
    let result = Plan::from_cli(&cli).and_then(|plan| app::run(&plan));
    if let Err(e @ (edge_sample::Error::Interrupted | edge_sample::Error::Terminated)) = result {
        std::process::exit(e.exit_code());
    }
    if let Err(e) = result {
        eprintln!("edge-sample: error: {e}");
        std::process::exit(e.exit_code());
    }
}
