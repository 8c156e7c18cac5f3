//! A small flag parser: `--name value` and bare `--flag`, every flag consumed exactly once, so a
//! typo is an error instead of being ignored.

use std::collections::HashMap;
use std::str::FromStr;

use crate::error::{Result, TfError};

pub struct Args {
    values: HashMap<String, Option<String>>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args> {
        let mut values = HashMap::new();
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            let Some(name) = a.strip_prefix("--") else {
                return Err(TfError::Input(format!("unexpected argument '{a}' (flags start with --)")));
            };
            if name.is_empty() {
                return Err(TfError::Input("empty flag '--'".into()));
            }
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => {
                    let next = argv.get(i + 1).filter(|n| !n.starts_with("--") || n.parse::<f64>().is_ok());
                    if let Some(v) = next {
                        i += 1;
                        (name.to_string(), Some(v.clone()))
                    } else {
                        (name.to_string(), None)
                    }
                }
            };
            if values.insert(name.clone(), value).is_some() {
                return Err(TfError::Input(format!("--{name} is given twice")));
            }
            i += 1;
        }
        Ok(Args { values, used: Default::default() })
    }

    fn mark(&self, name: &str) {
        self.used.borrow_mut().push(name.to_string());
    }

    /// A bare flag such as --greedy.
    pub fn flag(&self, name: &str) -> Result<bool> {
        self.mark(name);
        match self.values.get(name) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(v)) => Err(TfError::Input(format!("--{name} takes no value, got '{v}'"))),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<String>> {
        self.mark(name);
        match self.values.get(name) {
            None => Ok(None),
            Some(None) => Err(TfError::Input(format!("--{name} needs a value"))),
            Some(Some(v)) => Ok(Some(v.clone())),
        }
    }

    pub fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        match self.str(name)? {
            None => Ok(None),
            Some(v) => {
                v.parse::<T>().map(Some).map_err(|_| TfError::Input(format!("--{name}: '{v}' is not a valid {}", short_type::<T>())))
            }
        }
    }

    /// A comma-separated list, e.g. --ids 3,1,4.
    pub fn list<T: FromStr>(&self, name: &str) -> Result<Option<Vec<T>>> {
        match self.str(name)? {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(Some(vec![])),
            Some(v) => v
                .split(',')
                .map(|s| s.trim().parse::<T>().map_err(|_| TfError::Input(format!("--{name}: '{s}' is not a valid {}", short_type::<T>()))))
                .collect::<Result<Vec<T>>>()
                .map(Some),
        }
    }

    /// Errors on any flag nobody asked for.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let mut unknown: Vec<_> = self.values.keys().filter(|k| !used.contains(k)).map(|k| format!("--{k}")).collect();
        unknown.sort();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(TfError::Input(format!("unknown flag(s): {}", unknown.join(", "))))
        }
    }
}

fn short_type<T>() -> &'static str {
    let n = std::any::type_name::<T>();
    match n {
        "u32" | "u64" | "usize" => "non-negative integer",
        "f32" | "f64" => "number",
        _ => n,
    }
}
