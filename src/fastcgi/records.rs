//! What the connection does with each record it reads (FastCGI 1.0 §4, §5): the request
//! records of the current request, management records, and records for other ids.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::time::Instant;

use super::codec::{
    CANT_MPX_CONN, Incoming, Outgoing, Pair, ParamsParser, ProtocolError, REQUEST_COMPLETE,
    RESPONDER, UNKNOWN_ROLE,
};
use super::connection::{Next, Reader, State, idle_now};
use super::request::{self, Begin, Frame};
use crate::front_end::log;
use crate::request::Request;

impl Reader {
    /// Acts on one record; whether the connection goes on.
    pub(super) async fn on_record(&mut self, record: Incoming) -> Next {
        match record {
            Incoming::BeginRequest {
                id,
                role,
                keep_conn,
            } => self.on_begin(id, role, keep_conn).await,
            Incoming::AbortRequest { id } => self.on_abort(id).await,
            Incoming::Params { id, content } => self.on_params(id, &content).await,
            Incoming::Stdin { id, content } => self.on_stdin(id, content).await,
            Incoming::GetValues { names } => {
                let pairs = self.values(names);
                self.send(Frame::Record(Outgoing::GetValuesResult { pairs }))
                    .await
            }
            Incoming::Unknown { record_type, id: 0 } => {
                self.send(Frame::Record(Outgoing::UnknownType { record_type }))
                    .await
            }
            // FCGI_DATA belongs to the filter role, which we refuse; records of types only
            // an application sends are not ours to answer.
            Incoming::Data { .. } | Incoming::Unknown { .. } => Next::Continue,
        }
    }

    async fn on_begin(&mut self, id: u16, role: u16, keep_conn: bool) -> Next {
        if let State::Running { started, .. } = &mut self.state
            && started.ending.load(Ordering::SeqCst)
        {
            // Its END_REQUEST is out (the peer has seen it); the task is returning.
            let done = (&mut started.task).await;
            if let Next::Close = self.on_done(done) {
                return Next::Close;
            }
        }
        if let State::Draining { id: old, keep_conn } = self.state {
            // The previous body was never ended; the new request shows it never will be.
            if old != id && keep_conn {
                self.state = idle_now();
            }
        }
        match &self.state {
            State::Idle { .. } => {}
            State::Params { id: current, .. }
            | State::Running { id: current, .. }
            | State::Draining { id: current, .. } => {
                if *current == id {
                    log(format_args!(
                        "closing a connection: request {id} began twice"
                    ));
                    return Next::Close;
                }
                // FastCGI 1.0 §5.5: one request at a time on this connection.
                return self.send(end_request(id, 0, CANT_MPX_CONN)).await;
            }
        }
        if role != RESPONDER {
            // §5.5: only the responder role is served (no authorizer, no filter).
            if let Next::Close = self.send(end_request(id, 0, UNKNOWN_ROLE)).await {
                return Next::Close;
            }
            return self.request_over(keep_conn);
        }
        self.state = State::Params {
            id,
            keep_conn,
            since: Instant::now(),
            parser: ParamsParser::new(self.service.limits.params_bytes),
            pairs: Vec::new(),
        };
        Next::Continue
    }

    async fn on_abort(&mut self, id: u16) -> Next {
        match &mut self.state {
            State::Params {
                id: current,
                keep_conn,
                ..
            } if *current == id => {
                let keep_conn = *keep_conn;
                if let Next::Close = self.send(end_request(id, 0, REQUEST_COMPLETE)).await {
                    return Next::Close;
                }
                self.request_over(keep_conn)
            }
            State::Running {
                id: current,
                started,
                stdin_open,
                ..
            } if *current == id => {
                // The engine notices, stops, and queues END_REQUEST itself (§5.4).
                started.abort.abort();
                *stdin_open = false;
                started.stdin = None;
                Next::Continue
            }
            State::Draining {
                id: current,
                keep_conn,
            } if *current == id => {
                // Its END_REQUEST is already out; the abort just ends the body early.
                let keep_conn = *keep_conn;
                self.request_over(keep_conn)
            }
            // An id with no request here: nothing to abort.
            _ => Next::Continue,
        }
    }

    async fn on_params(&mut self, id: u16, content: &[u8]) -> Next {
        let State::Params {
            id: current,
            parser,
            pairs,
            ..
        } = &mut self.state
        else {
            return self.stray(id, "FCGI_PARAMS");
        };
        if *current != id {
            return Next::Continue;
        }
        if !content.is_empty() {
            return match parser.feed_into(content, pairs) {
                Ok(()) => Next::Continue,
                Err(ProtocolError::ParamsTooLarge { limit }) => {
                    log(format_args!("request {id}: params over {limit} bytes: 431"));
                    let text = format!("request headers over the {limit}-byte limit\n");
                    let tail =
                        request::text_response(431, "Request Header Fields Too Large", &text);
                    let _ = self.send(end_with(id, tail)).await;
                    Next::Close
                }
                Err(e) => {
                    log(format_args!("closing a connection: {e}"));
                    Next::Close
                }
            };
        }
        // The empty record ends the params: the request can start.
        let State::Params {
            keep_conn,
            parser,
            pairs,
            ..
        } = std::mem::replace(&mut self.state, idle_now())
        else {
            return Next::Close;
        };
        if let Err(e) = parser.finish() {
            log(format_args!("closing a connection: {e}"));
            return Next::Close;
        }
        let request = Request::new(pairs);
        let started = match request::begin(&self.service, id, request, self.out.clone()) {
            // A declared 304 or 412 is answered here, on the connection's task: no blocking
            // thread, no channels. Whatever body follows is dropped as for any response that
            // ended before its body did.
            Begin::Answered(answer) => {
                self.state = State::Draining { id, keep_conn };
                return self.send(answer).await;
            }
            Begin::Started(started) => started,
        };
        self.state = State::Running {
            id,
            keep_conn,
            started,
            stdin_open: true,
        };
        Next::Continue
    }

    async fn on_stdin(&mut self, id: u16, content: Bytes) -> Next {
        match &mut self.state {
            State::Running {
                id: current,
                started,
                stdin_open,
                ..
            } if *current == id => {
                if !*stdin_open {
                    return Next::Continue;
                }
                if content.is_empty() {
                    *stdin_open = false;
                    // Dropping the sender is the script's end of input.
                    started.stdin = None;
                    return Next::Continue;
                }
                let Some(stdin) = &started.stdin else {
                    // The script is done with its stdin; the rest is dropped.
                    return Next::Continue;
                };
                // Back-pressure: wait while the script is not reading. If it never does, its
                // run ends (exit or timeout) and the send fails.
                tokio::select! {
                    sent = stdin.send(content) => {
                        if sent.is_err() {
                            started.stdin = None;
                        }
                        Next::Continue
                    }
                    () = self.out.closed() => Next::Close,
                }
            }
            State::Draining {
                id: current,
                keep_conn,
            } if *current == id => match content.is_empty() {
                true => {
                    let keep_conn = *keep_conn;
                    self.request_over(keep_conn)
                }
                false => Next::Continue,
            },
            State::Params { id: current, .. } if *current == id => {
                log(format_args!(
                    "closing a connection: FCGI_STDIN before the end of FCGI_PARAMS"
                ));
                Next::Close
            }
            _ => Next::Continue,
        }
    }

    /// A stream record for a request past that stream: ours is a protocol error, another
    /// id's is ignored (§3.3: records for inactive ids).
    fn stray(&self, id: u16, what: &str) -> Next {
        let current = match &self.state {
            State::Running { id, .. } | State::Draining { id, .. } => Some(*id),
            _ => None,
        };
        if current == Some(id) {
            log(format_args!(
                "closing a connection: {what} after its stream ended"
            ));
            return Next::Close;
        }
        Next::Continue
    }

    /// FCGI_GET_VALUES_RESULT (§4.1): the variables we know, once each; others left out.
    fn values(&self, names: Vec<Vec<u8>>) -> Vec<Pair> {
        let mut pairs: Vec<Pair> = Vec::new();
        for name in names {
            let value = match name.as_slice() {
                // Connections served at once (more are closed at once).
                b"FCGI_MAX_CONNS" => self.service.limits.max_connections.to_string(),
                // Requests served at once: the script slots (`--max-children`); more wait.
                b"FCGI_MAX_REQS" => self.service.max_children.to_string(),
                b"FCGI_MPXS_CONNS" => "0".to_string(),
                _ => continue,
            };
            if !pairs.iter().any(|(n, _)| *n == name) {
                pairs.push((name, value.into_bytes()));
            }
        }
        pairs
    }

    async fn send(&self, frame: Frame) -> Next {
        match self.out.send(frame).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close,
        }
    }
}

fn end_request(id: u16, app_status: u32, protocol_status: u8) -> Frame {
    Frame::Record(Outgoing::EndRequest {
        id,
        app_status,
        protocol_status,
    })
}

fn end_with(id: u16, tail: Bytes) -> Frame {
    Frame::End {
        id,
        tail,
        stderr_used: false,
        app_status: 1,
        protocol_status: REQUEST_COMPLETE,
    }
}
