//! Named event counters, cheap enough to bump per packet: the server's discards, the SMS
//! gateway's late results. Logged when the server stops; each has a doc line saying what it counts.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a struct of [`Counter`]s with a `snapshot()` listing each by name.
macro_rules! counters {
    ($(#[doc = $sdoc:literal])* $vis:vis struct $ty:ident { $($(#[doc = $doc:literal])* $name:ident),* $(,)? }) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Default)]
        $vis struct $ty {
            $($(#[doc = $doc])* pub $name: $crate::counters::Counter,)*
        }

        impl $ty {
            /// Every counter by name, for logs and metrics.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.get()),)*]
            }

            /// Every counter by name with its doc line, for the metrics endpoint's help text.
            pub fn described(&self) -> Vec<$crate::counters::Described> {
                vec![$($crate::counters::Described {
                    name: stringify!($name),
                    help: concat!($($doc),*),
                    value: self.$name.get(),
                },)*]
            }
        }
    };
}
pub(crate) use counters;

/// One counter's name, doc line and value.
#[derive(Debug, Clone, Copy)]
pub struct Described {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
