//! pgml.import_model's parsers: whatever the bytes, a LightGBM text model
//! or an XGBoost JSON model parses to a checked forest or a 22023, and a
//! forest that passes the checks loads into LightGBM (the text LightGBM
//! sees is pgmlcat's own) without aborting, crashing or looping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmlcat::ml::import;
use pgmlcat::ml::Task;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, model)) = data.split_first() else {
        return;
    };
    let format = import::FORMATS[usize::from(selector) % import::FORMATS.len()];
    if let Ok(forest) = import::parse(format, model) {
        let task = match forest.objective {
            import::Objective::Regression => Task::Regression,
            _ => Task::Classification,
        };
        let _ = import::build(&forest, task, &[]);
    }
});
