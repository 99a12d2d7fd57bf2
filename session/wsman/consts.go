package wsman

// XML namespace URIs (MS-WSMV). The comment gives the prefix Windows
// uses; parsing never depends on prefixes.
const (
	NsSoap        = "http://www.w3.org/2003/05/soap-envelope"                         // s
	NsAddressing  = "http://schemas.xmlsoap.org/ws/2004/08/addressing"                // a
	NsWsman       = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"                  // w
	NsWsmanMS     = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"             // p
	NsTransfer    = "http://schemas.xmlsoap.org/ws/2004/09/transfer"                  // x
	NsEnumeration = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"               // n
	NsEventing    = "http://schemas.xmlsoap.org/ws/2004/08/eventing"                  // e
	NsShell       = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"         // rsp
	NsFault       = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"            // f
	NsConfig      = "http://schemas.microsoft.com/wbem/wsman/1/config"                // cfg
	NsIdentity    = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd" // wsmid
	NsCimBinding  = "http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd"             // b
	NsPowerShell  = "http://schemas.microsoft.com/powershell"                         // default ns of creationXml/connectXml
	NsXML         = "http://www.w3.org/XML/1998/namespace"                            // xml (predefined)
	NsXSI         = "http://www.w3.org/2001/XMLSchema-instance"                       // xsi
	nsSoap11      = "http://schemas.xmlsoap.org/soap/envelope/"                       // rejected: SOAP 1.1
	nsIdentityAlt = "http://schemas.dmtf.org/wbem/wsman/identify/1/wsmanidentity.xsd" // pypsrp's misspelling
)

// Action URIs (MS-WSMV, DSP0226). A response's Action is the request's Action
// followed by "Response".
const (
	ActionGet    = NsTransfer + "/Get"
	ActionPut    = NsTransfer + "/Put"
	ActionCreate = NsTransfer + "/Create"
	ActionDelete = NsTransfer + "/Delete"

	ActionEnumerate = NsEnumeration + "/Enumerate"
	ActionPull      = NsEnumeration + "/Pull"
	ActionRelease   = NsEnumeration + "/Release"

	ActionCommand    = NsShell + "/Command"
	ActionSend       = NsShell + "/Send"
	ActionReceive    = NsShell + "/Receive"
	ActionSignal     = NsShell + "/Signal"
	ActionDisconnect = NsShell + "/Disconnect"
	ActionReconnect  = NsShell + "/Reconnect"
	ActionConnect    = NsShell + "/Connect"

	// ActionFault is the Action of every fault Windows sends, including those
	// with a:-prefixed subcodes.
	ActionFault = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

	// ResponseSuffix is appended to a request Action to form the response Action.
	ResponseSuffix = "Response"
)

// AddressAnonymous is the anonymous WS-Addressing endpoint, used as a:To in
// every response and as a:ReplyTo/a:Address in every request.
const AddressAnonymous = NsAddressing + "/role/anonymous"

// Resource URIs.
const (
	ResourceCmdShell = NsShell + "/cmd"
	ResourceShell    = NsShell
	ResourceCommand  = NsShell + "/Command"
	ResourceConfig   = "http://schemas.microsoft.com/wbem/wsman/1/config"
	// PowerShellPrefix prefixes PSRP resource URIs; the rest is the session
	// configuration name (e.g. "Microsoft.PowerShell").
	PowerShellPrefix = NsPowerShell + "/"
)

// Signal codes (rsp:Signal/rsp:Code). Compare them case-insensitively:
// pywinrm sends ".../signal/terminate", pypsrp ".../signal/Terminate".
const (
	SignalTerminate = NsShell + "/signal/terminate"
	SignalCtrlC     = NsShell + "/signal/ctrl_c"
	SignalCtrlBreak = NsShell + "/signal/ctrl_break"
	// SignalPSCrtlC is the PowerShell client's stop-pipeline code (sic).
	SignalPSCrtlC = PowerShellPrefix + "signal/crtl_c"
	// SignalPSCtrlC is the spelling pypsrp sends for the same purpose.
	SignalPSCtrlC = PowerShellPrefix + "signal/ctrl_c"
)

// Command states (rsp:CommandState/@State).
const (
	StateDone    = NsShell + "/CommandState/Done"
	StateRunning = NsShell + "/CommandState/Running"
	StatePending = NsShell + "/CommandState/Pending"
)

// DialectSelectorFilter is the w:Filter Dialect of optimized Enumerate
// requests that filter by selector (MS-WSMV).
const DialectSelectorFilter = "http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter"

// Security profile URIs reported by an authenticated Identify (DSP0226).
const (
	SecProfilePrefix            = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/"
	SecProfileHTTPBasic         = SecProfilePrefix + "http/basic"
	SecProfileHTTPSBasic        = SecProfilePrefix + "https/basic"
	SecProfileHTTPSMutual       = SecProfilePrefix + "https/mutual"
	SecProfileHTTPSpnegoKerb    = SecProfilePrefix + "http/spnego-kerberos"
	SecProfileHTTPSSpnegoKerb   = SecProfilePrefix + "https/spnego-kerberos"
	IdentifyProtocolVersion     = NsWsman
	IdentifyProductVendor       = "Microsoft Corporation"
	IdentifyUnauthenticatedVers = "OS: 0.0.0 SP: 0.0 Stack: 3.0"
)

// w:FaultDetail URIs (DSP0226 fault detail codes).
const (
	FaultDetailPrefix          = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"
	DetailUnexpectedSelectors  = FaultDetailPrefix + "UnexpectedSelectors"
	DetailDuplicateSelectors   = FaultDetailPrefix + "DuplicateSelectors"
	DetailInvalidValue         = FaultDetailPrefix + "InvalidValue"
	DetailInvalidResourceURI   = FaultDetailPrefix + "InvalidResourceURI"
	DetailMinimumEnvelopeLimit = FaultDetailPrefix + "MinimumEnvelopeLimit"
	DetailServiceEnvelopeLimit = FaultDetailPrefix + "ServiceEnvelopeLimit"
	DetailMaxEnvelopeSize      = FaultDetailPrefix + "MaxEnvelopeSize"
	DetailCharacterSet         = FaultDetailPrefix + "CharacterSet"
	DetailUnsupportedCharacter = FaultDetailPrefix + "UnsupportedCharacter"
)

// WSManFault codes (f:WSManFault/@Code), MS-WSMV. Windows error
// names in the comments.
const (
	CodeAccessDenied              uint32 = 5          // ERROR_ACCESS_DENIED
	CodeInvalidParameter          uint32 = 87         // ERROR_INVALID_PARAMETER
	CodeOperationAborted          uint32 = 995        // ERROR_OPERATION_ABORTED (0x3E3)
	CodeFileNotFound              uint32 = 2147942402 // 0x80070002, process start failure
	CodeStartAccessDenied         uint32 = 2147942405 // 0x80070005 E_ACCESSDENIED, program not executable
	CodeDirectoryInvalid          uint32 = 2147942667 // 0x8007010B ERROR_DIRECTORY
	CodeResourceNotFound          uint32 = 2150858752 // ERROR_WSMAN_RESOURCE_NOT_FOUND
	CodeActionNotSupported        uint32 = 2150858753 // ERROR_WSMAN_INVALID_ACTIONURI
	CodeInvalidHeader             uint32 = 2150858767 // 0x8033800F invalid message information header
	CodeMustUnderstand            uint32 = 2150858768 // ERROR_WSMAN_SOAP_FAULT_MUST_UNDERSTAND
	CodeInvalidEnumerationContext uint32 = 2150858779 // ERROR_WSMAN_INVALID_ENUMERATION_CONTEXT
	CodeEnvelopeTooLarge          uint32 = 2150858790 // ERROR_WSMAN_ENVELOPE_TOO_LARGE
	CodeTimedOut                  uint32 = 2150858793 // 0x80338029 ERROR_WSMAN_OPERATION_TIMEDOUT
	CodeEncodingLimit             uint32 = 2150858805 // ERROR_WSMAN_ENCODING_LIMIT
	CodeInvalidResourceURI        uint32 = 2150858811 // ERROR_WSMAN_INVALID_RESOURCE_URI
	CodeQuotaLimit                uint32 = 2150858815 // ERROR_WSMAN_QUOTA_LIMIT
	CodeSchemaValidation          uint32 = 2150858817 // 0x80338041 ERROR_WSMAN_SCHEMA_VALIDATION_ERROR
	CodeMaxEnvelopeSizeTooSmall   uint32 = 2150858823 // ERROR_WSMAN_MAX_ENVELOPE_SIZE (pairing unverified)
	CodeMaxEnvelopeSizeExceeded   uint32 = 2150858824 // ERROR_WSMAN_MAX_ENVELOPE_SIZE_EXCEEDED
	CodeInvalidSelectors          uint32 = 2150858843 // 0x8033805B ERROR_WSMAN_UNEXPECTED_SELECTORS
	CodeQuotaMaxShells            uint32 = 2150859173 // 0x803381A5 ERROR_WSMAN_QUOTA_MAX_SHELLS
	CodeQuotaMaxOperations        uint32 = 2150859174 // 0x803381A6 ERROR_WSMAN_QUOTA_MAX_OPERATIONS
	CodeQuotaMaxShellUsers        uint32 = 2150859179 // ERROR_WSMAN_QUOTA_MAX_SHELLUSERS
	CodeRemoteShellsNotAllowed    uint32 = 2150859180 // ERROR_WSMAN_REMOTESHELLS_NOT_ALLOWED
	CodeServiceStreamDisconnected uint32 = 2150859230 // 0x803381DE ERROR_WSMAN_SERVICE_STREAM_DISCONNECTED
)

// MinMaxEnvelopeSize is the smallest w:MaxEnvelopeSize a client may ask for
// (DSP0226 R6.2-4); smaller values get a w:EncodingLimit fault.
const MinMaxEnvelopeSize = 8192
