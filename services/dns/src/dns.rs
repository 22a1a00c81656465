//! The DNS server (hickory-server, UDP and TCP on `dns_listen`): cluster names from the
//! record table with TTL 0, everything else relayed to the upstream resolvers.
//!
//! The querier is its source address, unless that address is no task's and the query
//! carries an EDNS Client Subnet option for a single address (/32, /128): the workers'
//! relay for containers adds one. A task's own address always wins over the option, so
//! a task cannot claim the host's wider view.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::seq::SliceRandom;
use shoal_grpc_host::ShutdownToken;
use tokio::net::{TcpListener, UdpSocket};
use tracing::Instrument;

use crate::records::Records;
use crate::table::{Lookup, Querier};
use crate::upstream::Upstream;

/// A TCP connection that sends no query for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// The largest UDP answer offered, whatever the client advertises.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// TTL of every cluster answer: they change within a second.
const CLUSTER_TTL: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Answers DNS queries from the record table and the upstreams.
#[derive(Clone)]
pub struct DnsHandler {
    records: Arc<Records>,
    upstream: Arc<Upstream>,
}

/// What a query gets.
enum Reply {
    Cluster {
        code: ResponseCode,
        answers: Vec<Record>,
    },
    Forwarded(Message),
    Fail(ResponseCode),
}

impl DnsHandler {
    pub fn new(records: Arc<Records>, upstream: Upstream) -> DnsHandler {
        DnsHandler {
            records,
            upstream: Arc::new(upstream),
        }
    }

    /// The querier's address: the source, or the ECS address if the source is no task.
    fn querier(&self, request: &Request) -> Querier {
        let src = request.src().ip().to_canonical();
        let table = self.records.read();
        let by_src = table.querier(src);
        if by_src != Querier::Host {
            return by_src;
        }
        match client_subnet(request) {
            Some(ip) => table.querier(ip),
            None => Querier::Host,
        }
    }

    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::Fail(ResponseCode::NotImp);
        }
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => return Reply::Fail(ResponseCode::FormErr),
        };
        let query = info.query;
        let qtype = query.query_type();
        let name = Name::from(query.name());
        if query.query_class() == DNSClass::IN {
            if qtype == RecordType::PTR {
                if let Some(reply) = self.ptr(&name) {
                    return reply;
                }
            } else if let Some(reply) = self.cluster(request, &name, qtype) {
                return reply;
            }
        }
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        match self
            .upstream
            .forward(
                query.original(),
                request.metadata.recursion_desired,
                dnssec_ok,
            )
            .await
        {
            Some(answer) => Reply::Forwarded(answer),
            None => Reply::Fail(ResponseCode::ServFail),
        }
    }

    /// A cluster name's reply, `None` for a name that is not the cluster's.
    fn cluster(&self, request: &Request, name: &Name, qtype: RecordType) -> Option<Reply> {
        let querier = self.querier(request);
        let lookup = self.records.read().lookup(&name.to_ascii(), &querier);
        let (mut addrs, shuffle) = match lookup {
            Lookup::NotOurs => return None,
            Lookup::NxDomain => {
                tracing::debug!(?querier, "NXDOMAIN");
                return Some(Reply::Cluster {
                    code: ResponseCode::NXDomain,
                    answers: Vec::new(),
                });
            }
            Lookup::Found { addrs, shuffle } => (addrs, shuffle),
        };
        if shuffle {
            addrs.shuffle(&mut rand::rng());
        }
        let answers: Vec<Record> = addrs
            .into_iter()
            .filter_map(|ip| {
                let rdata = match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                    _ => return None,
                };
                Some(Record::from_rdata(name.clone(), CLUSTER_TTL, rdata))
            })
            .collect();
        tracing::debug!(?querier, answers = answers.len(), "cluster answer");
        Some(Reply::Cluster {
            code: ResponseCode::NoError,
            answers,
        })
    }

    fn ptr(&self, name: &Name) -> Option<Reply> {
        let net = name.parse_arpa_name().ok()?;
        let full = if net.addr().is_ipv4() { 32 } else { 128 };
        if net.prefix_len() != full {
            return None;
        }
        let target = self.records.read().ptr(net.addr())?;
        let target = Name::from_ascii(format!("{target}.")).ok()?;
        Some(Reply::Cluster {
            code: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                name.clone(),
                CLUSTER_TTL,
                RData::PTR(PTR(target)),
            )],
        })
    }
}

/// The address of an EDNS Client Subnet option naming one host.
fn client_subnet(request: &Request) -> Option<IpAddr> {
    let edns = request.edns.as_ref()?;
    let EdnsOption::Subnet(subnet) = edns.option(EdnsCode::Subnet)? else {
        return None;
    };
    let addr = subnet.addr();
    let full = if addr.is_ipv4() { 32 } else { 128 };
    (subnet.source_prefix() == full).then_some(addr.to_canonical())
}

/// The EDNS of a response to `request`: present when the request had one, echoing its
/// Client Subnet (scoped to the whole address: the answer was for that querier).
fn response_edns(request: &Request) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    if let Some(EdnsOption::Subnet(subnet)) = asked.option(EdnsCode::Subnet) {
        let echoed = ClientSubnet::new(
            subnet.addr(),
            subnet.source_prefix(),
            subnet.source_prefix(),
        );
        edns.options_mut().insert(EdnsOption::Subnet(echoed));
    }
    Some(edns)
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[tonic::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let name = request
            .queries
            .queries()
            .first()
            .map(|q| format!("{} {}", q.name(), q.query_type()))
            .unwrap_or_default();
        let span = tracing::debug_span!(
            "dns query",
            query = %name,
            src = %request.src(),
            protocol = %request.protocol(),
        );
        async {
            let reply = self.reply(request).await;
            let edns = response_edns(request);
            let mut builder = MessageResponseBuilder::from_message_request(request);
            if let Some(edns) = &edns {
                builder.edns(edns);
            }
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.recursion_available = true;
            let sent = match &reply {
                Reply::Cluster { code, answers } => {
                    metadata.authoritative = true;
                    metadata.response_code = *code;
                    let response = builder.build(metadata, answers.iter(), [], [], []);
                    response_handle.send_response(response).await
                }
                Reply::Forwarded(answer) => {
                    metadata.response_code = answer.metadata.response_code;
                    metadata.authentic_data = answer.metadata.authentic_data;
                    metadata.recursion_available = answer.metadata.recursion_available;
                    let response = builder.build(
                        metadata,
                        answer.answers.iter(),
                        answer.authorities.iter(),
                        [],
                        answer.additionals.iter(),
                    );
                    response_handle.send_response(response).await
                }
                Reply::Fail(code) => {
                    tracing::debug!(code = %code, "failed");
                    let response = builder.error_msg(&request.metadata, *code);
                    response_handle.send_response(response).await
                }
            };
            match sent {
                Ok(info) => info,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot send the response");
                    failed(request, ResponseCode::ServFail)
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Serves DNS on `addr` (UDP and TCP on the same port; port 0 picks one) until
/// `shutdown`. Returns the address it answers on.
pub async fn serve(
    addr: SocketAddr,
    handler: DnsHandler,
    shutdown: ShutdownToken,
) -> Result<SocketAddr, DnsError> {
    let bind_err = |source| DnsError::Bind { addr, source };
    let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = tcp.local_addr().map_err(bind_err)?;
    let udp = UdpSocket::bind(local).await.map_err(bind_err)?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    let stop = server.shutdown_token().clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.cancel();
    });
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::error!(error = %e, "the DNS server stopped");
        }
    });
    tracing::info!(addr = %local, "serving DNS (UDP and TCP)");
    Ok(local)
}
