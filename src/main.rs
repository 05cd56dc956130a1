use clap::error::ErrorKind;
use clap::Parser;
use edge_sample::app;
use edge_sample::cli::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                // clap's message, kept to its first line: one line naming the problem.
                let text = e.render().to_string();
                let line = text.lines().next().unwrap_or("invalid arguments");
                eprintln!("edge-sample: {}", line.trim_start_matches("error: "));
                std::process::exit(2);
            }
        },
    };
    let result = match &cli.command {
        None => app::sample(&cli.sample),
        Some(Command::Info { model, precision }) => app::info(model, *precision),
        Some(Command::Bench(b)) => app::bench(b),
        Some(Command::Models) => app::list_models(),
        Some(Command::Boards) => app::list_boards(),
        Some(Command::Frame(f)) => app::frame(f),
    };
    if let Err(edge_sample::Error::Interrupted) = result {
        std::process::exit(130);
    }
    if let Err(e) = result {
        eprintln!("edge-sample: error: {e}");
        std::process::exit(e.exit_code());
    }
}
