//! The thin host layer: the only code that talks to Envoy (through `abi`). It reads what
//! Envoy knows, hands it to the functional core, and carries out the core's decisions.

pub mod abi;
mod hold;
mod http;
mod logger;
mod metrics;
mod root;
mod store;

proxy_wasm::main! {{
    logger::init();
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
