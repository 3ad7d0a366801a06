#!/usr/bin/env python3
"""Writes the seed corpus: fuzz/corpus/<target>/seed-*. Run from fuzz/.

Real-shaped Direct Routing traffic (the hub's INVITE with SDES SRTP, the
SBC's answers, OPTIONS pings, REFER with Replaces), torture-style messages
in the spirit of RFC 4475 (the repository carries none; these are written
here, named after the RFC's cases), SDP offers/answers, RFC 5769 STUN
vectors (from sbc/src/media/stun.rs) and an ICE check for the fuzz agent,
and RTP packets.
"""
import hashlib, hmac, os, struct, zlib

def crlf(s):
    return s.replace("\r\n", "\n").replace("\n", "\r\n").encode()

def sip(head, body=b""):
    head = head.strip("\n") + "\n"
    if "Content-Length" not in head and "\nl:" not in head:
        head += f"Content-Length: {len(body)}\n"
    return crlf(head + "\n") + body

TEAMS_SDP = crlf("""v=0
o=- 0 0 IN IP4 52.114.16.1
s=session
c=IN IP4 52.114.16.1
b=CT:10000000
t=0 0
m=audio 52884 RTP/SAVP 111 103 104 9 0 8 106 13 110 112 113 126 101
c=IN IP4 52.114.16.1
a=rtpmap:111 OPUS/48000/2
a=rtpmap:104 SILK/16000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=crypto:0 AES_CM_128_HMAC_SHA1_32 inline:Zg1cAUAsyprNiozBc91aDBDQSkg8a0NBr4hXHRDP|2^31
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:mqy/fjvSpK2Sw4vnIm2dF5iSOMjDjcI6hMHVZ1Ab|2^31|1:1
a=ice-ufrag:Tsuh
a=ice-pwd:xrYbX4aoJ+HFmOhUPPRM4OMs
a=candidate:1 1 UDP 54001663 52.114.16.1 52884 typ srflx raddr 10.0.0.1 rport 52884
a=rtcp:52884
a=rtcp-mux
a=sendrecv
a=label:main-audio
a=ptime:20
""")

SBC_ANSWER = crlf("""v=0
o=drlab 1 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/SAVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
a=rtcp:40000
a=rtcp-mux
a=sendrecv
a=ptime:20
""")

CARRIER_SDP = crlf("""v=0
o=carrier 1234 1 IN IP4 198.51.100.20
s=-
c=IN IP4 198.51.100.20
t=0 0
m=audio 30000 RTP/AVP 8 0 18 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
""")

BYPASS_SDP = crlf("""v=0
o=- 2 2 IN IP6 2001:db8::10
s=-
c=IN IP6 2001:db8::10
t=0 0
a=ice-lite
m=audio 50000 UDP/TLS/RTP/SAVP 0 8 101
a=ice-ufrag:ABCDefgh
a=ice-pwd:0123456789abcdefghijklmn
a=candidate:1 1 UDP 2130706431 2001:db8::10 50000 typ host
a=candidate:2 1 UDP 1694498815 203.0.113.7 50001 typ srflx raddr 10.1.1.1 rport 50000 generation 0
a=remote-candidates:1 2001:db8::99 40000
a=rtpmap:101 telephone-event/8000
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31|1:1 FEC_ORDER=FEC_SRTP
a=rtcp-mux
m=video 0 RTP/AVP 96
""")

HOLD_SDP = crlf("""v=0
o=carrier 1234 2 IN IP4 198.51.100.20
s=-
c=IN IP4 0.0.0.0
t=0 0
a=sendonly
m=audio 30000/2 RTP/AVP 0
a=inactive
""")

VIA_HUB = "Via: SIP/2.0/TLS 52.114.148.0:5061;branch=z9hG4bK3a1f2c0d"
INVITE = sip(f"""INVITE sip:+4930123456@sbc1.adatum.biz:5061;user=phone;transport=tls SIP/2.0
FROM: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=a6c9e0b3f1
TO: <sip:+4930123456@sbc1.adatum.biz:5061;user=phone>
CSEQ: 1 INVITE
CALL-ID: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3
MAX-FORWARDS: 70
VIA: SIP/2.0/TLS 52.114.148.0:5061;branch=z9hG4bK3a1f2c0d
RECORD-ROUTE: <sip:sip-du-a-euwe.pstnhub.microsoft.com:5061;transport=tls;lr>
CONTACT: <sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i=8f1c2d3e-4b5a-6978-a1b2-c3d4e5f60718;x-c=0a1b2c3d4e5f/d/8/ff00112233445566>
CONTENT-TYPE: application/sdp
ALLOW: INVITE,ACK,OPTIONS,CANCEL,BYE,NOTIFY
SUPPORTED: timer
SESSION-EXPIRES: 1800
MIN-SE: 90
P-ASSERTED-IDENTITY: <tel:+4989000001>
USER-AGENT: Microsoft.PSTNHub.SIPProxy v.2024.5.1.2 i.EUWE.8
X-MS-SBC-HOST: sbc1.adatum.biz
""", TEAMS_SDP)

OK_200 = sip(f"""SIP/2.0 200 OK
{VIA_HUB}
From: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=a6c9e0b3f1
To: <sip:+4930123456@sbc1.adatum.biz:5061;user=phone>;tag=7d3e9b21c4
Call-ID: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3
CSeq: 1 INVITE
Record-Route: <sip:sip-du-a-euwe.pstnhub.microsoft.com:5061;transport=tls;lr>
Contact: <sip:sbc1.adatum.biz:5061;transport=tls>
Allow: INVITE,ACK,OPTIONS,CANCEL,BYE,REFER,NOTIFY
Supported: replaces,timer
Session-Expires: 1800;refresher=uac
Require: timer
Content-Type: application/sdp
Server: drlab-sbc/0.1
""", SBC_ANSWER)

OPTIONS = sip("""OPTIONS sip:sip.pstnhub.microsoft.com:5061;transport=tls SIP/2.0
Via: SIP/2.0/TLS sbc1.adatum.biz:5061;alias;branch=z9hG4bKac2121518978
Max-Forwards: 70
From: <sip:sbc1.adatum.biz:5061>;tag=1
To: <sip:sip.pstnhub.microsoft.com:5061>
Call-ID: opt-1@sbc1.adatum.biz
CSeq: 1 OPTIONS
Contact: <sip:sbc1.adatum.biz:5061;transport=tls>
Allow: INVITE,ACK,OPTIONS,CANCEL,BYE,REFER,NOTIFY
""")

REFER = sip("""REFER sip:sbc1.adatum.biz:5061;transport=tls SIP/2.0
Via: SIP/2.0/TLS 52.114.148.0:5061;branch=z9hG4bK77aa0011
Max-Forwards: 70
From: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=a6c9e0b3f1
To: <sip:+4930123456@sbc1.adatum.biz:5061;user=phone>;tag=7d3e9b21c4
Call-ID: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3
CSeq: 2 REFER
Contact: <sip:api-du-a-euwe.pstnhub.microsoft.com:443;x-i=8f1c2d3e;x-c=0a1b/d/8/ff00>
Refer-To: <sip:+4989000002@sip.pstnhub.microsoft.com:5061;user=phone?Replaces=abc%40host%3Bto-tag%3D12%3Bfrom-tag%3D34&x-ms-target=1>
Referred-By: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>
""")

INVITE_REPLACES = sip(f"""INVITE sip:+4930123456@sbc1.adatum.biz:5061;transport=tls SIP/2.0
Via: SIP/2.0/TLS 52.114.148.0:5061;branch=z9hG4bKrepl0001
Max-Forwards: 70
From: <sip:+4989000003@sip.pstnhub.microsoft.com:5061;user=phone>;tag=r1
To: <sip:+4930123456@sbc1.adatum.biz:5061;user=phone>
Call-ID: replaces-1@pstnhub
CSeq: 1 INVITE
Contact: <sip:api-du-b-usea.pstnhub.microsoft.com:443;x-i=1;x-c=2/d/8/3>
Replaces: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3;to-tag=7d3e9b21c4;from-tag=a6c9e0b3f1
Require: replaces
Content-Type: application/sdp
""", TEAMS_SDP)

CARRIER_INVITE = sip(f"""INVITE sip:030123456@192.0.2.1:5060 SIP/2.0
v: SIP/2.0/UDP 198.51.100.20:5060;rport;branch=z9hG4bKcarrier01
f: "Alice" <sip:0891234567@carrier.example.net>;tag=c1
t: <sip:030123456@192.0.2.1>
i: carrier-call-1@198.51.100.20
CSeq: 10 INVITE
m: <sip:0891234567@198.51.100.20:5060>
Max-Forwards: 69
c: application/sdp
""", CARRIER_SDP)

ACK = sip("""ACK sip:sbc1.adatum.biz:5061;transport=tls SIP/2.0
Via: SIP/2.0/TLS 52.114.148.0:5061;branch=z9hG4bKack00001
Max-Forwards: 70
From: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=a6c9e0b3f1
To: <sip:+4930123456@sbc1.adatum.biz:5061;user=phone>;tag=7d3e9b21c4
Call-ID: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3
CSeq: 1 ACK
""")

BYE = sip("""BYE sip:sbc1.adatum.biz:5061;transport=tls SIP/2.0
Via: SIP/2.0/TLS 52.114.148.0:5061;branch=z9hG4bKbye00001
Max-Forwards: 70
From: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=a6c9e0b3f1
To: <sip:+4930123456@sbc1.adatum.biz:5061;user=phone>;tag=7d3e9b21c4
Call-ID: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3
CSeq: 3 BYE
Reason: Q.850;cause=16;text="Normal call clearing"
""")

CANCEL = sip(f"""CANCEL sip:+4930123456@sbc1.adatum.biz:5061;user=phone;transport=tls SIP/2.0
{VIA_HUB}
Max-Forwards: 70
From: <sip:+4989000001@sip.pstnhub.microsoft.com:5061;user=phone>;tag=a6c9e0b3f1
To: <sip:+4930123456@sbc1.adatum.biz:5061;user=phone>
Call-ID: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3
CSeq: 1 CANCEL
""")

RINGING = sip(f"""SIP/2.0 183 Session Progress
{VIA_HUB}
From: <sip:+4989000001@sip.pstnhub.microsoft.com>;tag=a6c9e0b3f1
To: <sip:+4930123456@sbc1.adatum.biz>;tag=x1
Call-ID: 2f6a2c1e5d4b43a1b0c9d8e7f6a5b4c3
CSeq: 1 INVITE
Contact: <sip:sbc1.adatum.biz:5061;transport=tls>
Content-Type: application/sdp
""", SBC_ANSWER)

CHALLENGE = sip("""SIP/2.0 407 Proxy Authentication Required
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKreg1;received=192.0.2.1;rport=5060
From: <sip:sbc@carrier.example.net>;tag=r1
To: <sip:sbc@carrier.example.net>;tag=x9
Call-ID: reg-1@192.0.2.1
CSeq: 1 REGISTER
Proxy-Authenticate: Digest realm="carrier.example.net", nonce="6a1b2c3d", qop="auth", algorithm=SHA-256, opaque="0f"
WWW-Authenticate: Digest realm="carrier.example.net",nonce="x",stale=TRUE
""")

REGISTER = sip("""REGISTER sip:carrier.example.net SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKreg2
Max-Forwards: 70
From: <sip:sbc@carrier.example.net>;tag=r1
To: <sip:sbc@carrier.example.net>
Call-ID: reg-1@192.0.2.1
CSeq: 2 REGISTER
Contact: <sip:sbc@192.0.2.1:5060>;expires=3600
Authorization: Digest username="sbc", realm="carrier.example.net", nonce="6a1b2c3d", uri="sip:carrier.example.net", response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="aa", algorithm=MD5
""")

# Torture-style messages after RFC 4475's cases (written here, not copied).
T = {}
T["wsinv"] = crlf("""INVITE sip:vivek@chair.example.com;unknownparam SIP/2.0
TO :
 sip:vivek@chair.example.com ;   tag    = 1918181833n
from   : "J R \\\\\\""  <sip:jdr@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 0
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdr@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

""")
T["intmeth"] = sip("""!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="\u0440\u0430\u0431";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\ufeff\u5927\u505c\u96fb
""")
T["esc01"] = sip("""INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
""")
T["lwsdisp"] = sip("""OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
""")
T["mcl01"] = crlf("""OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
""")
T["ncl"] = crlf("""INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

v=0
""")
T["scalar02"] = sip("""REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>;expires=280297596632815
""")
T["badvers"] = sip("""OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
""")
T["unkscm"] = sip("""OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.net;branch=z9hG4bKkdjuw39234
""")
T["mismatch01"] = sip("""OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
""")
T["insuf"] = sip("""INVITE sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
""")
T["zeromf"] = sip("""OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
""")
T["ltgtruri"] = sip("""INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKkdjuw
Contact: <sip:caller@host5.example.net>
""")
T["quotbal"] = sip("""INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
""")
T["nobranch-lf"] = ("BYE sip:a@b SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1\nFrom: <sip:x@y>;tag=1\n"
                    "To: <sip:a@b>;tag=2\nCall-ID: lf\nCSeq: 2 BYE\nMax-Forwards: 70\n\n").encode()
T["nonutf8"] = sip("OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:x@y>;tag=1\n"
                   "To: <sip:a@b>\nCall-ID: \u00ff\nCSeq: 1 OPTIONS\n").replace(b"\xc3\xbf", b"\xff\xfe")

SIP = {
    "invite-teams": INVITE, "200-ok": OK_200, "options": OPTIONS, "refer-replaces": REFER,
    "invite-replaces": INVITE_REPLACES, "invite-carrier": CARRIER_INVITE, "ack": ACK,
    "bye": BYE, "cancel": CANCEL, "183": RINGING, "407": CHALLENGE, "register": REGISTER,
}
SIP.update({"rfc4475-" + k: v for k, v in T.items()})

def write(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

for k, v in SIP.items():
    write("sip_message", k, v)
    write("endpoint_input", k, v)
SEP = b"\0\0NEXT\0\0"
write("endpoint_input", "invite-cancel", INVITE + SEP + CANCEL)
write("endpoint_input", "invite-ack-bye", INVITE + SEP + ACK + SEP + BYE)
write("endpoint_input", "invite-retransmit-refer", INVITE + SEP + INVITE + SEP + REFER)
write("endpoint_input", "options-200", OPTIONS + SEP + OK_200)

# sip_stream: [ctl][read sizes][stream]; ctl bits 1-4 = number of sizes.
stream = OPTIONS + b"\r\n\r\n" + INVITE + b"\r\n" + REFER
write("sip_stream", "three-in-reads", bytes([3 << 1, 7, 200, 13]) + stream)
write("sip_stream", "one-read", bytes([0]) + OK_200 + BYE)
write("sip_stream", "small-limit", bytes([1 | (2 << 1), 40, 40]) + OPTIONS)
write("sip_stream", "no-length", bytes([0]) + b"OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n")

for k, v in {"teams-offer": TEAMS_SDP, "sbc-answer": SBC_ANSWER, "carrier-offer": CARRIER_SDP,
             "bypass-ice": BYPASS_SDP, "hold": HOLD_SDP}.items():
    write("sdp", k, v)

# STUN: [ctl][packet]. RFC 5769 vectors, and a check our fuzz agent accepts.
def h(s):
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))
RFC5769_REQ = h("""000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573742063
6c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a683676592020
20000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf""")
RFC5769_V4 = h("""0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220
002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004
c07d4c96""")
RFC5769_V6 = h("""010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220
002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c
8292c275bfe3ed4180280004c8fb0b4c""")
RFC5769_LT = h("""000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383
e382afe382b900000015001c662f2f3439396b3935346436 4f4c33346f4c394653547679363473
41001400 0b6578616d706c652e6f72670000080014f67024656dd64a3e02b8e0712e85c9a28ca89666""")
def stun(attrs, key=b"VOkJxbRl1RmTxUk/WvJxBt", tx=b"\x01" * 12):
    body = b""
    for t, v in attrs:
        body += struct.pack(">HH", t, len(v)) + v + b"\0" * (-len(v) % 4)
    hdr = lambda n: struct.pack(">HHI", 0x0001, n, 0x2112A442) + tx
    mi = hmac.new(key, hdr(len(body) + 24) + body, hashlib.sha1).digest()
    body += struct.pack(">HH", 0x0008, 20) + mi
    crc = zlib.crc32(hdr(len(body) + 8) + body) ^ 0x5354554E
    body += struct.pack(">HHI", 0x8028, 4, crc)
    return hdr(len(body)) + body
CHECK = stun([(0x0006, b"evtj:h6vY"), (0x0024, struct.pack(">I", 0x6e0001ff)),
              (0x802A, b"\x11" * 8), (0x0025, b"")])
for k, v in {"rfc5769-request": RFC5769_REQ, "rfc5769-ipv4": RFC5769_V4, "rfc5769-ipv6": RFC5769_V6,
             "rfc5769-long-term": RFC5769_LT}.items():
    write("stun", k, b"\0" + v)
write("stun", "ice-check-nominating", b"\0" + CHECK)
write("stun", "resign-rfc5769-request", b"\x01" + RFC5769_REQ)

# RTP: records [op][len][bytes].
def rtp(pt, seq, ts, ssrc, payload, marker=False, ext=b"", csrc=()):
    b0 = 0x80 | (0x10 if ext else 0) | len(csrc)
    p = struct.pack(">BBHII", b0, pt | (0x80 if marker else 0), seq, ts, ssrc)
    p += b"".join(struct.pack(">I", c) for c in csrc) + ext + payload
    return p
def rec(op, data):
    return bytes([op, len(data)]) + data
pcmu = [rtp(0, 100 + i, 160 * i, 0x1234, bytes(range(i, i + 160 - 20))) for i in range(3)]
dtmf = rtp(101, 200, 8000, 0x1234, bytes([5, 0x8a, 0x03, 0x20]), marker=True)
ext = rtp(0, 7, 0, 0x99, b"\xff" * 40, ext=b"\xbe\xde\x00\x01\x10\xaa\x00\x00", csrc=(1, 2))
write("rtp_srtp", "carrier-then-plan", b"\0" + rec(2, pcmu[0]) + rec(6, b"\0") + rec(2, pcmu[1]) + rec(2, dtmf))
write("rtp_srtp", "teams-to-carrier", b"\0" + rec(6, b"\0") + rec(3, pcmu[0]) + rec(3, pcmu[1])
      + rec(3, rtp(96, 300, 9000, 0x55, bytes([1, 0x0a, 0, 160]))))
write("rtp_srtp", "roundtrip-and-raw", b"\1" + rec(1, pcmu[2]) + rec(1, ext) + rec(0, pcmu[0] + b"\0" * 11)
      + rec(4, pcmu[1]) + rec(5, pcmu[1]) + rec(7, bytes([11, 0x80, 0, 160])))
def arrival(seq, ts, at_ms, delay_ms):
    return struct.pack(">BBHI", 0x80, 0, seq & 0xFFFF, ts) + at_ms.to_bytes(3, "big") + bytes([delay_ms])
write("rtp_srtp", "quality", b"\1" + b"".join(rec(8, arrival(s, 160 * s, 20 * s + j, 5))
                                             for s, j in ((1, 0), (2, 3), (4, 0), (3, 90), (3, 0), (9, 0), (70000, 1))))
