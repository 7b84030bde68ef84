//! The HTTPS listener: accepts TCP connections on 127.0.0.1, runs the TLS handshake with
//! OpenSSL and serves HTTP/1.1 or HTTP/2 (ALPN) with hyper, handing every request to `api`.
//! Everything stops when the sim shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use openssl::ssl::{Ssl, SslAcceptor};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

use crate::Shared;

/// Accepts connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, acceptor: SslAcceptor, shared: Arc<Shared>) {
    let acceptor = Arc::new(acceptor);
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                if refusing(&shared) {
                    drop(tcp);
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(tcp, acceptor.clone(), shared.clone()));
            }
        }
    }
}

async fn connection(tcp: TcpStream, acceptor: Arc<SslAcceptor>, shared: Arc<Shared>) {
    let Ok(ssl) = Ssl::new(acceptor.context()) else {
        return;
    };
    let Ok(mut stream) = SslStream::new(ssl, tcp) else {
        return;
    };
    if Pin::new(&mut stream).accept().await.is_err() {
        return;
    }
    let mut shutdown = shared.shutdown.clone();
    let shared_for_outage = shared.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(crate::api::handle(shared, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let outage = {
        let shared = shared_for_outage;
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if refusing(&shared) {
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = conn => {}
        _ = shutdown.changed() => {}
        _ = outage => {}
    }
}

/// Whether an outage in `refuse` mode is on.
fn refusing(shared: &Shared) -> bool {
    shared.faults.lock().is_ok_and(|f| f.refusing())
}
