//! Metrics of a native module. Envoy lets a dynamic module define metrics only while its
//! configuration is created, so every series base of the core's catalogue is defined
//! then, with its label names; each observation is split back into its base and label
//! values. Envoy turns the labels into tags, so Prometheus sees the same names and
//! labels as with the Proxy-Wasm module's `stats_tags`.
#![allow(unsafe_code)]

use ai_gateway_core::metrics::{split_series, Kind, Observation, CATALOGUE};

use crate::abi::{self, ConfigPtr, FilterPtr, ModuleBuffer};

/// Envoy's id for each catalogue entry, in catalogue order (`None`: not defined).
pub struct Ids(Vec<Option<usize>>);

impl Ids {
    /// Defines the catalogue on the configuration being created.
    pub fn define(config: ConfigPtr) -> Ids {
        let ids = CATALOGUE
            .iter()
            .map(|(name, kind, labels)| {
                let names: Vec<ModuleBuffer> = labels
                    .iter()
                    .map(|l| ModuleBuffer::of(l.as_bytes()))
                    .collect();
                let define = match kind {
                    Kind::Counter => {
                        abi::envoy_dynamic_module_callback_http_filter_config_define_counter
                    }
                    Kind::Gauge => {
                        abi::envoy_dynamic_module_callback_http_filter_config_define_gauge
                    }
                    Kind::Histogram => {
                        abi::envoy_dynamic_module_callback_http_filter_config_define_histogram
                    }
                };
                let mut id = 0usize;
                // SAFETY: called inside on_http_filter_config_new with `config`; the
                // buffers outlive the call.
                let r = unsafe {
                    define(
                        config,
                        ModuleBuffer::of(name.as_bytes()),
                        names.as_ptr(),
                        names.len(),
                        &mut id,
                    )
                };
                if r == abi::METRICS_SUCCESS {
                    Some(id)
                } else {
                    log::warn!("metric {name} not defined (result {r})");
                    None
                }
            })
            .collect();
        Ids(ids)
    }

    /// Updates counters from the configuration (outside any stream: the global sync).
    pub fn record_config(&self, config: ConfigPtr, observations: &[Observation]) {
        for obs in observations.iter().filter(|o| o.kind == Kind::Counter) {
            let Some((id, values)) = self.series(obs) else {
                continue;
            };
            // SAFETY: `config` is the live configuration that defined `id`.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    config,
                    id,
                    values.as_ptr(),
                    values.len(),
                    obs.value,
                );
            }
        }
    }

    /// The id of an observation's base and its label values.
    fn series(&self, obs: &Observation) -> Option<(usize, Vec<ModuleBuffer>)> {
        let (base, labels) = split_series(&obs.name)?;
        let Some(pos) = CATALOGUE.iter().position(|(b, _, _)| *b == base) else {
            log::debug!("metric {base} is not in the catalogue");
            return None;
        };
        let id = self.0.get(pos).copied().flatten()?;
        Some((
            id,
            labels
                .iter()
                .map(|(_, v)| ModuleBuffer::of(v.as_bytes()))
                .collect(),
        ))
    }

    /// Updates each observation's series on the stream's filter.
    pub fn record(&self, filter: FilterPtr, observations: &[Observation]) {
        for obs in observations {
            let Some((id, values)) = self.series(obs) else {
                continue;
            };
            let update = match obs.kind {
                Kind::Counter => abi::envoy_dynamic_module_callback_http_filter_increment_counter,
                Kind::Gauge => abi::envoy_dynamic_module_callback_http_filter_set_gauge,
                Kind::Histogram => {
                    abi::envoy_dynamic_module_callback_http_filter_record_histogram_value
                }
            };
            // SAFETY: `filter` is the live stream's filter, created from the configuration
            // that defined `id`; the label buffers outlive the call.
            let r = unsafe { update(filter, id, values.as_ptr(), values.len(), obs.value) };
            if r != abi::METRICS_SUCCESS {
                log::debug!("metric {} not updated (result {r})", obs.name);
            }
        }
    }
}
