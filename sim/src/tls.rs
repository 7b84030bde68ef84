//! TLS for the simulated API server: a throw-away CA and a server certificate for
//! `127.0.0.1`/`localhost`, made fresh at every start with OpenSSL (the only TLS stack of the
//! workspace). The CA goes into the kubeconfig as `certificate-authority-data`.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{self, AlpnError, SslAcceptor, SslMethod};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};

/// The certificates of one sim: the CA (PEM) for clients and a ready acceptor for the server.
pub(crate) struct Tls {
    /// PEM of the CA certificate that signed the server certificate.
    pub ca_pem: Vec<u8>,
    /// Acceptor offering HTTP/2 and HTTP/1.1 through ALPN.
    pub acceptor: SslAcceptor,
}

fn key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn serial() -> Result<openssl::asn1::Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn name(cn: &str) -> Result<openssl::x509::X509Name, ErrorStack> {
    let mut b = X509NameBuilder::new()?;
    b.append_entry_by_text("CN", cn)?;
    Ok(b.build())
}

/// Generates a CA and a server certificate valid for 127.0.0.1 and localhost.
pub(crate) fn generate() -> Result<Tls, ErrorStack> {
    let ca_key = key()?;
    let ca_name = name("tidemark-sim-ca")?;
    let mut ca = X509::builder()?;
    ca.set_version(2)?;
    let (ca_serial, not_before, not_after) = (
        serial()?,
        Asn1Time::days_from_now(0)?,
        Asn1Time::days_from_now(3650)?,
    );
    ca.set_serial_number(&ca_serial)?;
    ca.set_subject_name(&ca_name)?;
    ca.set_issuer_name(&ca_name)?;
    ca.set_pubkey(&ca_key)?;
    ca.set_not_before(&not_before)?;
    ca.set_not_after(&not_after)?;
    ca.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    ca.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    ca.sign(&ca_key, MessageDigest::sha256())?;
    let ca = ca.build();

    let srv_key = key()?;
    let mut srv = X509::builder()?;
    srv.set_version(2)?;
    let (srv_serial, srv_name) = (serial()?, name("tidemark-sim")?);
    srv.set_serial_number(&srv_serial)?;
    srv.set_subject_name(&srv_name)?;
    srv.set_issuer_name(ca.subject_name())?;
    srv.set_pubkey(&srv_key)?;
    srv.set_not_before(&not_before)?;
    srv.set_not_after(&not_after)?;
    srv.append_extension(BasicConstraints::new().build()?)?;
    srv.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    srv.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&srv.x509v3_context(Some(&ca), None))?;
    srv.append_extension(san)?;
    srv.sign(&ca_key, MessageDigest::sha256())?;
    let srv = srv.build();

    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    acceptor.set_private_key(&srv_key)?;
    acceptor.set_certificate(&srv)?;
    acceptor.add_extra_chain_cert(ca.clone())?;
    acceptor.check_private_key()?;
    acceptor.set_alpn_select_callback(|_, client| {
        ssl::select_next_proto(b"\x02h2\x08http/1.1", client).ok_or(AlpnError::NOACK)
    });
    Ok(Tls {
        ca_pem: ca.to_pem()?,
        acceptor: acceptor.build(),
    })
}
