package federation

// CheckACL exposes checkACL to the end-to-end tests.
var CheckACL = (*Federation).checkACL
