//! Public-API tests of `cxr-max`.

mod labeler;
