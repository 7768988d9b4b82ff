//! `tipedge tokenize`: show CLIP token ids (for debugging prompts).

use clap::Args;
use tipedge::record::TokensRecord;
use tipedge::text::Tokenizer;

use super::common::print_json;

/// Print the CLIP BPE token ids of each text (with start/end tokens, padded to the context).
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Texts to tokenize.
    #[arg(required = true)]
    texts: Vec<String>,
    /// Context length (CLIP: 77). Longer texts are truncated with the end token kept.
    #[arg(long, default_value_t = 77)]
    context_length: usize,
    /// Print the padded rows as JSON arrays (one per line) instead of the unpadded ids.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TokenizeArgs) -> anyhow::Result<i32> {
    let tok = Tokenizer::new();
    for text in &args.texts {
        let ids = tok.tokenize(text, args.context_length);
        if args.json {
            print_json(&TokensRecord { text, ids: &ids });
        } else {
            let used: Vec<String> = ids
                .iter()
                .take_while(|&&i| i != 0)
                .map(|i| i.to_string())
                .collect();
            println!("{}\t{}", text, used.join(" "));
        }
    }
    Ok(super::EXIT_OK)
}
